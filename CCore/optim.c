/*
 * Gradient clipping by global norm and the Adam update. Parameters,
 * gradients and moments share one layout, so each is a single flat loop.
 */
#include "internal.h"

CHARRNN_VECTOR_CLONES static double sum_of_squares_range(const float *restrict x, size_t n) {
    double total = 0.0;
#pragma omp simd reduction(+ : total)
    for (size_t i = 0; i < n; i++) total += (double)x[i] * (double)x[i];
    return total;
}

/* One partial sum per fixed block, added in block order: the same norm,
 * and so the same clipping, for any team. */
static double sum_of_squares(const float *x, size_t n) {
    double partial[MAX_WORK_BLOCKS];
    int blocks = work_blocks();
#pragma omp parallel
    FOR_EACH_OWN_BLOCK(block, blocks) {
        size_t i0, i1;
        thread_range(n, block, blocks, 16, &i0, &i1);
        partial[block] = i1 > i0 ? sum_of_squares_range(x + i0, i1 - i0) : 0.0;
    }
    double total = 0.0;
    for (int block = 0; block < blocks; block++) total += partial[block];
    return total;
}

/* One thread's share of the Adam update (no aliasing: the caller's four
 * arrays are disjoint, as the API requires). Returns 0 when every updated
 * parameter is finite and NaN otherwise: p * 0 is 0 for a finite p and NaN
 * for NaN or infinity, so the check is one vectorised multiply-add in the
 * same pass, not a second pass over the block. */
CHARRNN_VECTOR_CLONES static float adam_range(float *restrict params, const float *restrict grads,
                                              float *restrict m, float *restrict v, size_t n,
                                              float lr_t, float b1, float b2, float eps) {
    float finite = 0.0f;
#pragma omp simd reduction(+ : finite)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        float mi = b1 * m[i] + (1.0f - b1) * g;
        float vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float p = params[i] - lr_t * mi / (sqrtf(vi) + eps);
        params[i] = p;
        finite += p * 0.0f;
    }
    return finite;
}

charrnn_status charrnn_grad_norm(const charrnn_config *config, const float *grads, float *norm) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!grads || !norm) return CHARRNN_ERR_NULL_POINTER;
    threads_wait_passively();
    *norm = (float)sqrt(sum_of_squares(grads, param_count_unchecked(config)));
    return CHARRNN_OK;
}

charrnn_status charrnn_clip_grad_norm(const charrnn_config *config, float *grads, float max_norm,
                                      float *norm_before) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!grads) return CHARRNN_ERR_NULL_POINTER;
    if (!(max_norm > 0.0f) || isinf(max_norm)) return CHARRNN_ERR_INVALID_ARGUMENT;
    threads_wait_passively();
    size_t n = param_count_unchecked(config);
    double norm = sqrt(sum_of_squares(grads, n));
    if (norm_before) *norm_before = (float)norm;
    if (!isfinite(norm)) return CHARRNN_ERR_NON_FINITE;
    if (norm > (double)max_norm) {
        /* tf.clip_by_global_norm: g * clip / max(norm, clip) */
        float scale = (float)((double)max_norm / norm);
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) grads[i] *= scale;
    }
    return CHARRNN_OK;
}

charrnn_adam_params charrnn_adam_default_params(void) {
    charrnn_adam_params p = {0.001f, 0.9f, 0.999f, 1e-8f};
    return p;
}

charrnn_status charrnn_adam_update(const charrnn_config *config, float *params, const float *grads,
                                   float *optimizer_state, int64_t step,
                                   const charrnn_adam_params *adam) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!params || !grads || !optimizer_state || !adam) return CHARRNN_ERR_NULL_POINTER;
    /* A rate of 0 is allowed: a schedule may end there (the moments still move). */
    if (step < 1 || !(adam->learning_rate >= 0.0f) || isinf(adam->learning_rate) ||
        !(adam->beta1 >= 0.0f && adam->beta1 < 1.0f) ||
        !(adam->beta2 >= 0.0f && adam->beta2 < 1.0f) || !(adam->epsilon > 0.0f) ||
        isinf(adam->epsilon))
        return CHARRNN_ERR_INVALID_ARGUMENT;

    threads_wait_passively();
    size_t n = param_count_unchecked(config);
    float *m = optimizer_state, *v = optimizer_state + n;
    /* TF folds both bias corrections into the step size and adds epsilon to
     * the uncorrected sqrt(v) ("epsilon hat"); computed in double because
     * beta^step underflows float precision long before training ends. */
    double t = (double)step;
    float lr_t = (float)((double)adam->learning_rate * sqrt(1.0 - pow((double)adam->beta2, t)) /
                         (1.0 - pow((double)adam->beta1, t)));
    float b1 = adam->beta1, b2 = adam->beta2, eps = adam->epsilon;
    float finite = 0.0f;
#pragma omp parallel reduction(+ : finite)
    {
        size_t i0, i1;
        thread_range(n, omp_get_thread_num(), omp_get_num_threads(), 16, &i0, &i1);
        if (i1 > i0)
            finite += adam_range(params + i0, grads + i0, m + i0, v + i0, i1 - i0, lr_t, b1, b2, eps);
    }
    /* A finite gradient can still take a weight past float's range (a huge
     * learning rate): say so at the step that did it, before anything
     * computes with the weights. */
    return finite == 0.0f ? CHARRNN_OK : CHARRNN_ERR_NON_FINITE;
}
