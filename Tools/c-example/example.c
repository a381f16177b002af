/*
 * A plain C program that uses CharRNN's core with charrnn.h and the
 * CCharRNN library alone.
 *
 *   example                  builds a small model over the characters of a
 *                            text it carries, trains it for a few hundred
 *                            steps, and samples from it; prints "OK" and
 *                            exits 0 when the model learned (final loss
 *                            under a third of the initial one).
 *   example CHECKPOINT [PRIME [LENGTH [SEED]]]
 *                            samples from a model `charrnn train` wrote (any
 *                            cell): the prime, then LENGTH characters drawn
 *                            from the 5 most likely with a generator seeded
 *                            with SEED, exactly what `charrnn sample
 *                            --checkpoint CHECKPOINT --prime PRIME --length
 *                            LENGTH --seed SEED` prints. The file is mapped
 *                            and its parameter block used in place
 *                            (checkpoint.h).
 *   example --bf16 CHECKPOINT [PRIME [LENGTH [SEED]]]
 *                            the same with bf16 products (charrnn_bf16_pack,
 *                            charrnn_prime_bf16, charrnn_step_bf16): what
 *                            `charrnn sample ... --precision bf16` prints.
 *   example --loss CHECKPOINT TEXT
 *                            the model's mean cross-entropy on the file TEXT
 *                            (nats per character): the whole file as one
 *                            stream from a zero state, each character
 *                            predicted from all before it, what `charrnn
 *                            eval --checkpoint CHECKPOINT --data TEXT`
 *                            reports.
 *
 * Built against an installed library (Tools/install-c-library PREFIX):
 *   cc -O2 example.c $(pkg-config --cflags --libs charrnn) -o example
 * or against the build directory:
 *   swift build --product CCharRNN
 *   cc -O2 Tools/c-example/example.c -Iinclude -L.build/debug -lCCharRNN \
 *      -Wl,-rpath,$PWD/.build/debug -o example && ./example
 *
 * A failing call is printed with the core's message, and the exit is 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "charrnn.h"
#include "checkpoint.h"

static const char *TEXT =
    "It was the best of times, it was the worst of times, it was the age of wisdom, "
    "it was the age of foolishness, it was the epoch of belief, it was the epoch of "
    "incredulity, it was the season of Light, it was the season of Darkness, it was "
    "the spring of hope, it was the winter of despair.\n";

#define CHECK(call)                                                                   \
    do {                                                                              \
        charrnn_status status_ = (call);                                              \
        if (status_ != CHARRNN_OK) {                                                  \
            fprintf(stderr, "example: %s failed: %s\n", #call,                        \
                    charrnn_status_message(status_));                                 \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

/* The vocabulary entry the UTF-8 text at p starts with, or -1. Each entry is
 * one character's bytes, and UTF-8 is prefix-free, so at most one matches. */
static int32_t token_at(const checkpoint *model, const char *p) {
    for (int32_t v = 0; v < model->config.vocab_size; v++) {
        size_t n = strlen(model->vocab[v]);
        if (n > 0 && strncmp(p, model->vocab[v], n) == 0) return v;
    }
    return -1;
}

/* Samples from a checkpoint, as `charrnn sample` does for one stream (with
 * bf16 products when `bf16`, as `charrnn sample --precision bf16`). */
static int sample_checkpoint(const char *path, const char *prime, int length, uint64_t seed, int bf16) {
    checkpoint model;
    if (!checkpoint_open(path, &model)) return 1;
    charrnn_config *config = &model.config;
    charrnn_cell_info info;
    CHECK(charrnn_cell_info_get(config->cell, &info));
    fprintf(stderr, "model: %d %s layers of %d units, %d characters; parameters %s\n", config->num_layers, info.name,
            config->hidden_size, config->vocab_size, model.in_place ? "used in place from the mapped file" : "copied");

    size_t n_state, n_scratch, sample_bytes;
    CHECK(charrnn_state_count(config, 1, &n_state));
    CHECK(charrnn_step_scratch_count(config, 1, &n_scratch));
    CHECK(charrnn_sample_scratch_size(config->vocab_size, &sample_bytes));
    float *state = calloc(n_state, sizeof(float)), *scratch = malloc(n_scratch * sizeof(float));
    float *logits = malloc((size_t)config->vocab_size * sizeof(float));
    void *sample_scratch = malloc(sample_bytes);
    if (!state || !scratch || !logits || !sample_scratch) return 1;
    charrnn_rng rng;
    CHECK(charrnn_rng_seed(&rng, seed));
    charrnn_sampling_params sampling = charrnn_sampling_default_params();
    sampling.top_k = config->vocab_size < 5 ? config->vocab_size : 5; /* charrnn sample's default */
    /* bf16: the weight matrices packed once; the step and the prime then read them. */
    uint16_t *packed = NULL;
    if (bf16) {
        size_t n_packed;
        CHECK(charrnn_bf16_weights_count(config, &n_packed));
        if (!(packed = malloc(n_packed * sizeof(uint16_t)))) return 1;
        CHECK(charrnn_bf16_pack(config, model.params, packed));
        if (charrnn_bf16_kernel() != CHARRNN_BF16_AVX512)
            fprintf(stderr, "example: this CPU has no AVX512_BF16: bf16 runs in portable C, slowly\n");
    }

    /* The prime as tokens (one vocabulary entry's UTF-8 bytes each; at most
     * one per byte), then fed in one call: charrnn_prime batches what it can
     * of a run of known characters and gives the scores after the last. */
    int32_t *prime_tokens = malloc((strlen(prime) + 1) * sizeof(int32_t));
    int32_t steps = 0, token = -1;
    if (!prime_tokens) return 1;
    for (const char *p = prime; *p; p += strlen(model.vocab[token])) {
        token = token_at(&model, p);
        if (token < 0) {
            fprintf(stderr, "example: the prime has a character the model does not know at '%.8s'\n", p);
            return 1;
        }
        fputs(model.vocab[token], stdout);
        prime_tokens[steps++] = token;
    }
    if (steps == 0) { fprintf(stderr, "example: the prime is empty\n"); return 1; }
    size_t n_prime_scratch;
    CHECK(charrnn_prime_scratch_count(config, steps, &n_prime_scratch));
    float *prime_scratch = malloc(n_prime_scratch * sizeof(float));
    if (!prime_scratch) return 1;
    if (packed)
        CHECK(charrnn_prime_bf16(config, model.params, packed, steps, prime_tokens, state, prime_scratch, logits));
    else
        CHECK(charrnn_prime(config, model.params, steps, prime_tokens, state, prime_scratch, logits));
    free(prime_tokens); free(prime_scratch);
    for (int i = 0; i < length; i++) {
        CHECK(charrnn_sample(logits, config->vocab_size, &sampling, &rng, sample_scratch, NULL, &token));
        fputs(model.vocab[token], stdout);
        if (i + 1 < length && packed)
            CHECK(charrnn_step_bf16(config, model.params, packed, 1, &token, state, scratch, logits));
        else if (i + 1 < length)
            CHECK(charrnn_step(config, model.params, 1, &token, state, scratch, logits));
    }
    free(state); free(scratch); free(logits); free(sample_scratch); free(packed);
    checkpoint_close(&model);
    return 0;
}

/* Mean cross-entropy of a text file under a checkpoint, as `charrnn eval`
 * computes it: the text as one stream from a zero state, in chunks of up to
 * 1000 steps through the training pass without dropout, the state carried
 * from chunk to chunk. */
static int text_loss(const char *path, const char *text_path) {
    FILE *file = fopen(text_path, "rb");
    if (!file) { fprintf(stderr, "example: cannot open %s\n", text_path); return 1; }
    size_t capacity = 1 << 16, size = 0, n;
    char *text = malloc(capacity + 1);
    while (text && (n = fread(text + size, 1, capacity - size, file)) > 0)
        if ((size += n) == capacity) text = realloc(text, (capacity *= 2) + 1);
    fclose(file);
    if (!text) { fprintf(stderr, "example: out of memory\n"); return 1; }
    text[size] = '\0';

    checkpoint model;
    if (!checkpoint_open(path, &model)) return 1;
    charrnn_config *config = &model.config;
    int32_t *tokens = malloc((size + 1) * sizeof(int32_t));
    if (!tokens) { fprintf(stderr, "example: out of memory\n"); return 1; }
    size_t count = 0;
    for (const char *p = text; *p; p += strlen(model.vocab[tokens[count++]])) {
        if ((tokens[count] = token_at(&model, p)) < 0) {
            fprintf(stderr, "example: the text has a character the model does not know at byte %ld\n", (long)(p - text));
            return 1;
        }
    }
    if (count < 2) { fprintf(stderr, "example: the text needs at least 2 characters\n"); return 1; }

    enum { CHUNK = 1000 };
    size_t n_state, n_acts;
    CHECK(charrnn_state_count(config, 1, &n_state));
    CHECK(charrnn_activation_count(config, 1, CHUNK, &n_acts));
    float *state = calloc(n_state, sizeof(float)), *acts = malloc(n_acts * sizeof(float));
    if (!state || !acts) { fprintf(stderr, "example: out of memory\n"); return 1; }
    double total = 0.0;
    size_t predictions = count - 1;
    for (size_t start = 0; start < predictions; start += CHUNK) {
        int32_t steps = (int32_t)(predictions - start < CHUNK ? predictions - start : CHUNK);
        charrnn_batch batch = {.batch_size = 1, .steps = steps, .inputs = tokens + start, .targets = tokens + start + 1};
        float loss;
        CHECK(charrnn_forward(config, model.params, &batch, 1.0f, 0, state, state, acts, &loss));
        total += (double)loss * steps;
    }
    printf("loss %.9f nats per character over %zu predictions\n", total / (double)predictions, predictions);
    free(text); free(tokens); free(state); free(acts);
    checkpoint_close(&model);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--loss") == 0) {
        if (argc != 4) { fprintf(stderr, "usage: example --loss CHECKPOINT TEXT\n"); return 2; }
        return text_loss(argv[2], argv[3]);
    }
    int bf16 = argc > 1 && strcmp(argv[1], "--bf16") == 0;
    if (bf16) argv++, argc--;
    if (argc > 1)
        return sample_checkpoint(argv[1], argc > 2 ? argv[2] : "The ", argc > 3 ? atoi(argv[3]) : 200,
                                 argc > 4 ? strtoull(argv[4], NULL, 10) : 1, bf16);

    /* Vocabulary: the distinct bytes of the (ASCII) text, in byte order. */
    int index_of[256], vocab_size = 0;
    char chars[256];
    for (int c = 0; c < 256; c++) index_of[c] = -1;
    for (const char *p = TEXT; *p; p++) index_of[(unsigned char)*p] = 0;
    for (int c = 0; c < 256; c++)
        if (index_of[c] == 0) { index_of[c] = vocab_size; chars[vocab_size++] = (char)c; }
    size_t length = strlen(TEXT);

    charrnn_config config = {.vocab_size = vocab_size, .hidden_size = 64, .num_layers = 2};
    const int32_t B = 4, T = 32;
    size_t n_params, n_adam, n_state, n_acts;
    CHECK(charrnn_param_count(&config, &n_params));
    CHECK(charrnn_optimizer_state_count(&config, &n_adam));
    CHECK(charrnn_state_count(&config, B, &n_state));
    CHECK(charrnn_activation_count(&config, B, T, &n_acts));
    float *params = malloc(n_params * sizeof(float)), *grads = malloc(n_params * sizeof(float));
    float *adam = calloc(n_adam, sizeof(float)), *state = calloc(n_state, sizeof(float));
    float *acts = malloc(n_acts * sizeof(float));
    int32_t *inputs = malloc((size_t)B * T * sizeof(int32_t)), *targets = malloc((size_t)B * T * sizeof(int32_t));
    if (!params || !grads || !adam || !state || !acts || !inputs || !targets) {
        fprintf(stderr, "example: out of memory\n");
        return 1;
    }
    CHECK(charrnn_init_params(&config, params, 42));
    printf("model: V=%d H=%d L=%d, %zu parameters\n", vocab_size, config.hidden_size, config.num_layers, n_params);

    /* Train: each step, stream b reads T characters starting at a place that
     * moves through the text, so every stream sees all of it. */
    charrnn_adam_params adam_params = charrnn_adam_default_params();
    adam_params.learning_rate = 0.01f;
    float first_loss = 0.0f, loss = 0.0f, norm;
    for (int64_t step = 1; step <= 300; step++) {
        for (int32_t b = 0; b < B; b++) {
            size_t start = ((size_t)step * 7 + (size_t)b * length / B) % (length - T - 1);
            for (int32_t t = 0; t < T; t++) {
                inputs[b * T + t] = index_of[(unsigned char)TEXT[start + t]];
                targets[b * T + t] = index_of[(unsigned char)TEXT[start + t + 1]];
            }
        }
        charrnn_batch batch = {.batch_size = B, .steps = T, .inputs = inputs, .targets = targets};
        CHECK(charrnn_forward(&config, params, &batch, 1.0f, (uint64_t)step, NULL, NULL, acts, &loss));
        memset(grads, 0, n_params * sizeof(float));
        CHECK(charrnn_backward(&config, params, &batch, acts, grads));
        CHECK(charrnn_clip_grad_norm(&config, grads, 5.0f, &norm));
        CHECK(charrnn_adam_update(&config, params, grads, adam, step, &adam_params));
        if (step == 1) first_loss = loss;
        if (step == 1 || step % 100 == 0) printf("step %3lld  loss %.4f\n", (long long)step, loss);
    }

    /* Sample: prime with "It was", then draw 120 characters from the top 3. */
    size_t n_step_state, n_scratch, sample_bytes;
    CHECK(charrnn_state_count(&config, 1, &n_step_state));
    CHECK(charrnn_step_scratch_count(&config, 1, &n_scratch));
    CHECK(charrnn_sample_scratch_size(vocab_size, &sample_bytes));
    float *step_state = calloc(n_step_state, sizeof(float)), *scratch = malloc(n_scratch * sizeof(float));
    float *logits = malloc((size_t)vocab_size * sizeof(float));
    void *sample_scratch = malloc(sample_bytes);
    if (!step_state || !scratch || !logits || !sample_scratch) return 1;
    charrnn_rng rng;
    CHECK(charrnn_rng_seed(&rng, 7));
    charrnn_sampling_params sampling = charrnn_sampling_default_params();
    sampling.top_k = 3;

    const char *prime = "It was";
    printf("sample: %s", prime);
    int32_t token = 0;
    for (const char *p = prime; *p; p++) {
        token = index_of[(unsigned char)*p];
        CHECK(charrnn_step(&config, params, 1, &token, step_state, scratch, logits));
    }
    for (int i = 0; i < 120; i++) {
        CHECK(charrnn_sample(logits, vocab_size, &sampling, &rng, sample_scratch, NULL, &token));
        putchar(chars[token]);
        CHECK(charrnn_step(&config, params, 1, &token, step_state, scratch, logits));
    }
    printf("\n");

    int learned = loss < first_loss / 3.0f;
    printf("%s: loss %.4f -> %.4f\n", learned ? "OK" : "FAILED", first_loss, loss);
    free(params); free(grads); free(adam); free(state); free(acts); free(inputs); free(targets);
    free(step_state); free(scratch); free(logits); free(sample_scratch);
    return learned ? 0 : 1;
}
