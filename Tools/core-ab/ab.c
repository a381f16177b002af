// Old core against new, in one process: the reference model's Adam step, a
// whole training step (forward, backward, Adam) and 200 one-stream sampling
// steps (charrnn_step), taking turns. Built and run
// by Tools/core-ab/run.sh, which says how; not part of the library.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "charrnn.h"

#define CHECK(call)                                                              \
    do {                                                                         \
        charrnn_status s_ = (call);                                              \
        if (s_ != CHARRNN_OK) {                                                  \
            fprintf(stderr, "%s failed: %s\n", #call, charrnn_status_message(s_)); \
            exit(1);                                                             \
        }                                                                        \
    } while (0)

typedef charrnn_status (*adam_fn)(const charrnn_config *, float *, const float *, float *, int64_t,
                                  const charrnn_adam_params *);
typedef charrnn_status (*forward_fn)(const charrnn_config *, const float *, const charrnn_batch *, float,
                                     uint64_t, const float *, float *, float *, float *);
typedef charrnn_status (*backward_fn)(const charrnn_config *, const float *, const charrnn_batch *, float *,
                                      float *);
typedef charrnn_status (*step_fn)(const charrnn_config *, const float *, int32_t, const int32_t *, float *, float *,
                                  float *);
typedef charrnn_status (*scratch_fn)(const charrnn_config *, int32_t, size_t *);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const char *names[2] = {"./libold.so", "./libnew.so"};
    adam_fn adam[2];
    forward_fn forward[2];
    backward_fn backward[2];
    step_fn step_one[2];
    scratch_fn scratch_count[2];
    for (int k = 0; k < 2; k++) {
        void *library = dlopen(names[k], RTLD_NOW | RTLD_LOCAL);
        if (!library) { fprintf(stderr, "%s\n", dlerror()); return 1; }
        adam[k] = (adam_fn)dlsym(library, "charrnn_adam_update");
        forward[k] = (forward_fn)dlsym(library, "charrnn_forward");
        backward[k] = (backward_fn)dlsym(library, "charrnn_backward");
        step_one[k] = (step_fn)dlsym(library, "charrnn_step");
        scratch_count[k] = (scratch_fn)dlsym(library, "charrnn_step_scratch_count");
        if (!adam[k] || !forward[k] || !backward[k] || !step_one[k] || !scratch_count[k]) {
            fprintf(stderr, "%s: missing symbols\n", names[k]);
            return 1;
        }
    }
    int B = argc > 1 ? atoi(argv[1]) : 100, T = B, H = argc > 2 ? atoi(argv[2]) : 512;
    int rounds = argc > 3 ? atoi(argv[3]) : 9;
    charrnn_config c = {83, H, 2, CHARRNN_CELL_LSTM};
    if (B < 1 || H < 1 || rounds < 1 || rounds > 64 || (argc > 4 && charrnn_cell_from_name(argv[4], &c.cell) != CHARRNN_OK)) {
        fprintf(stderr, "usage: ab [B=T H ROUNDS<=64 CELL]\n");
        return 1;
    }
    size_t P, A, S;
    CHECK(charrnn_param_count(&c, &P));
    CHECK(charrnn_activation_count(&c, B, T, &A));
    CHECK(charrnn_state_count(&c, B, &S));
    float *params = malloc(P * 4), *grads = calloc(P, 4), *moments = calloc(2 * P, 4);
    float *activations = malloc(A * 4), *state = calloc(S, 4);
    int32_t *inputs = malloc((size_t)B * T * 4), *targets = malloc((size_t)B * T * 4);
    if (!params || !grads || !moments || !activations || !state || !inputs || !targets) { fprintf(stderr, "out of memory\n"); return 1; }
    CHECK(charrnn_init_params(&c, params, 1));
    for (size_t i = 0; i < P; i++) grads[i] = 1e-3f * (float)((i * 7) % 13) - 6e-3f;
    for (int i = 0; i < B * T; i++) { inputs[i] = (i * 7 + 3) % 83; targets[i] = (i * 5 + 1) % 83; }
    charrnn_batch batch = {B, T, inputs, targets};
    charrnn_adam_params settings = {1e-4f, 0.9f, 0.999f, 1e-8f};
    /* Sampling: each core gets the scratch it asks for, and the state
     * [C, L, 1, H] of the cell. */
    size_t S1, scratch_floats[2];
    CHECK(charrnn_state_count(&c, 1, &S1));
    float *scratch[2], *one_state = calloc(S1, 4), *logits = malloc(83 * 4);
    for (int k = 0; k < 2; k++) {
        CHECK(scratch_count[k](&c, 1, &scratch_floats[k]));
        scratch[k] = malloc(scratch_floats[k] * 4);
        if (!scratch[k]) { fprintf(stderr, "out of memory\n"); return 1; }
    }
    if (!one_state || !logits) { fprintf(stderr, "out of memory\n"); return 1; }
    double adam_seconds[2][64], step_seconds[2][64], sample_seconds[2][64];
    float loss;
    int64_t step = 0;
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < 2; k++) {
            double t0 = now();
            for (int i = 0; i < 20; i++) CHECK(adam[k](&c, params, grads, moments, ++step, &settings));
            adam_seconds[k][r] = (now() - t0) / 20;
            t0 = now();
            CHECK(forward[k](&c, params, &batch, 0.5f, (uint64_t)r, state, state, activations, &loss));
            CHECK(backward[k](&c, params, &batch, activations, grads));
            CHECK(adam[k](&c, params, grads, moments, ++step, &settings));
            step_seconds[k][r] = now() - t0;
            t0 = now();
            for (int i = 0; i < 200; i++) {
                int32_t token = (i * 7) % 83;
                CHECK(step_one[k](&c, params, 1, &token, one_state, scratch[k], logits));
            }
            sample_seconds[k][r] = (now() - t0) / 200;
        }
    }
    for (int k = 0; k < 2; k++) {
        qsort(adam_seconds[k], rounds, sizeof(double), by_value);
        qsort(step_seconds[k], rounds, sizeof(double), by_value);
        qsort(sample_seconds[k], rounds, sizeof(double), by_value);
    }
    double o0 = sample_seconds[0][rounds / 2], o1 = sample_seconds[1][rounds / 2];
    double a0 = adam_seconds[0][rounds / 2], a1 = adam_seconds[1][rounds / 2];
    double s0 = step_seconds[0][rounds / 2], s1 = step_seconds[1][rounds / 2];
    charrnn_cell_info info;
    CHECK(charrnn_cell_info_get(c.cell, &info));
    printf("%s, V 83, H %d, 2 layers, batch %d x %d, %zu parameters; %d rounds taking turns (medians)\n", info.name, H, B, T, P, rounds);
    printf("Adam step:     old %.3f ms  new %.3f ms  new/old %.3f\n", a0 * 1e3, a1 * 1e3, a1 / a0);
    printf("training step: old %.4f s   new %.4f s   new/old %.3f\n", s0, s1, s1 / s0);
    printf("sampling step: old %.1f us  new %.1f us  new/old %.3f  (1 stream)\n", o0 * 1e6, o1 * 1e6, o1 / o0);
    return 0;
}
