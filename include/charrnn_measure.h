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

/* One matrix product a pass made: C[m, n] (+)= op(A)[m, k] op(B)[k, n], run by
 * OpenMP thread `thread` (0 without OpenMP). A matrix-vector product is
 * recorded as m = 1, trans_b = 1. */
typedef struct charrnn_product {
    int32_t thread;
    int32_t trans_a, trans_b;
    int32_t m, n, k;
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

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_MEASURE_H */
