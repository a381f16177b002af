#ifndef CHARRNN_MEASURE_H
#define CHARRNN_MEASURE_H

/*
 * Measurement entry points of the CharRNN core, for `charrnn bench` and the
 * core's tests: not part of the C API (charrnn.h), not installed with it,
 * and free to change between versions.
 *
 * The products alone: each runs exactly the BLAS calls of the named
 * operation (same shapes, same split across threads, same order) and
 * nothing else, so a benchmark can set a step's time beside the time of the
 * products it cannot avoid. They are copies of the passes' product calls;
 * what keeps them true is the product log below, with which a test records
 * the calls of the real passes and of the copies and requires them equal.
 */
#include "charrnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The products of charrnn_forward followed by charrnn_backward on a B x T
 * batch (activations: charrnn_activation_count floats; grads: param count).
 * The buffers' contents afterwards are meaningless: pass scratch copies. */
charrnn_status charrnn_training_products(const charrnn_config *config, const float *params,
                                         int32_t batch_size, int32_t steps, float *activations,
                                         float *grads);

/* The products of one charrnn_step for S streams (same buffers as charrnn_step;
 * their contents afterwards are meaningless). */
charrnn_status charrnn_step_products(const charrnn_config *config, const float *params,
                                     int32_t streams, float *state, float *scratch,
                                     float *logits);

/* out[s, r] = sum_k W[r, k] x[s, k] (W [rows, cols], x [inputs, cols],
 * out [inputs, rows], row-major) through a named bf16 kernel
 * (charrnn_bf16_kernel_kind), W and x rounded to bf16 first: so a test can
 * hold the CPU's kernel to the portable one bit for bit. Refuses a kernel
 * the CPU lacks with CHARRNN_ERR_INVALID_ARGUMENT. Allocates. */
charrnn_status charrnn_bf16_product(int32_t kernel, int32_t rows, int32_t cols, int32_t inputs,
                                    const float *weights, const float *x, float *out);

/* The kernels of the recurrent products (the recurrent product and its
 * backward, panels.c): BLAS's sgemm, or our own on W_hh packed once per
 * pass. Chosen when the core is loaded: AVX-512 where the CPU has it, else
 * AVX2 where it has AVX2 and FMA; BLAS elsewhere. The environment variable
 * CHARRNN_RECURRENT_PRODUCTS ("blas", "portable", "avx512", or "avx2": our
 * AVX2 kernel on any CPU with AVX2 and FMA, AVX-512 ones included)
 * overrides the choice.
 * charrnn_runtime_get says which runs, and why. */
typedef enum charrnn_panels_kernel_kind {
    CHARRNN_PANELS_BLAS = 0,     /* sgemm of the linked BLAS */
    CHARRNN_PANELS_PORTABLE = 1, /* portable C (fmaf): the AVX2 kernel's bits */
    CHARRNN_PANELS_AVX2 = 2,     /* 6 x 16 AVX2 FMA micro-kernel */
    CHARRNN_PANELS_AVX512 = 3    /* 6 x 32 AVX-512 FMA micro-kernel */
} charrnn_panels_kernel_kind;

int32_t charrnn_panels_kernel(void);

/* c[m, n] = (accumulate ? c : 0) + a[m, k] op(b) through a named packed
 * kernel (PORTABLE or AVX2), b [n, k] when trans_b, else [k, n]: so a test
 * can hold the AVX2 kernel to the portable one bit for bit. Refuses BLAS
 * and a kernel the CPU lacks with CHARRNN_ERR_INVALID_ARGUMENT. Allocates. */
charrnn_status charrnn_panels_product(int32_t kernel, int32_t trans_b, int32_t m, int32_t n,
                                      int32_t k, const float *a, const float *b, int32_t accumulate,
                                      float *c);

/* One matrix product a pass made: C[m, n] (+)= op(A)[m, k] op(B)[k, n], run by
 * OpenMP thread `thread` (0 without OpenMP). A matrix-vector product is
 * recorded as m = 1, trans_b = 1. `name` says what the product is in the
 * model ("recurrent", "dW_hh", "logits", ...: a string the core owns, valid
 * for the life of the process); `seconds` is how long the call took on its
 * thread. */
typedef struct charrnn_product {
    int32_t thread;
    int32_t trans_a, trans_b;
    int32_t m, n, k;
    const char *name;
    double seconds;
} charrnn_product;

/* Where products are recorded: `count` is advanced for every product
 * recorded, and the first `capacity` are stored in `entries`, each thread's
 * in the order it made them (threads interleave). */
typedef struct charrnn_product_log {
    charrnn_product *entries;
    int64_t capacity;
    int64_t count;
} charrnn_product_log;

/* Attaches `log` (NULL detaches): from now on every matrix product a compute
 * entry makes, on any thread, whose output C lies in outputs[0, count) is
 * recorded there. The range is how a test picks out its own calls while
 * other threads compute: their products write elsewhere and never touch the
 * log. A product in the range may still be recording for a moment after
 * detaching only if another thread computes into that memory, so give a
 * range no other thread writes (and that outlives the attachment). */
charrnn_status charrnn_log_products(charrnn_product_log *log, const float *outputs, size_t count);

/* The machine's own rate for one product's shape: every thread of the team
 * makes `product` (its m, n, k and transpositions; the rest is ignored)
 * `repeats` times at the same time, single-threaded, as the passes make
 * their products, with C accumulated (beta 1). a: m*k floats; b: k*n
 * floats; c: m*n floats per thread of the team (omp_get_max_threads()),
 * thread t writing the t-th. *seconds_per_call receives the slowest
 * thread's time from a common start, divided by `repeats`. */
charrnn_status charrnn_product_on_every_thread(const charrnn_product *product, int32_t repeats,
                                               const float *a, const float *b, float *c,
                                               double *seconds_per_call);

/* The FMA units' own rate: every thread of the team runs `rounds` rounds of
 * independent multiply-adds in the widest vectors the CPU has (chosen at
 * run time), and nothing else. *flops_per_thread receives the operations
 * each thread made, *seconds the slowest thread's time from a common start
 * (so flops_per_thread / seconds is a rate per core), and *instructions
 * names what ran, e.g. "AVX2 FMA" (a string the core owns). */
charrnn_status charrnn_fma_loop(int64_t rounds, double *flops_per_thread, double *seconds,
                                const char **instructions);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_MEASURE_H */
