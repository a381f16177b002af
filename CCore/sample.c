/*
 * Inference and sampling: one step of the model for S independent streams
 * (no dropout, no activation cache), a caller-owned random generator, and
 * drawing a character from logits with temperature, top-k, top-p or greedy.
 *
 * At S = 1 everything is a matrix-vector product, bound by reading the
 * weights (about 13 MB for the 512 x 2 model) once per character. Each
 * OpenMP thread multiplies by its own rows of every weight matrix (its slice
 * of hidden units, in each gate block), so the weights a thread
 * reads stay in its own cache from one character to the next, then does its
 * units' gates with the cell's kernel (cells.c); one barrier per layer.
 */
#include "internal.h"


/* The step's scratch, carved from one block (each region 16-float aligned):
 *   G [S, GH]: pre-activations, then activated gates; R [S, SH]: the split
 *   blocks' recurrent products; zeros [GH]: the input row the cell's kernel
 *   adds. The step puts the whole input term into G itself, before the
 *   products, as it always has: the LSTM's logits then keep their rounding,
 *   and a checkpoint its text for a given seed; h [L, S, H] and
 *   c [L, S, H] (two-state cells): the new state, copied into the caller's
 *   once every product has read the old one; aux [S, H]: the cell's aux
 *   values, unused here. */
typedef struct {
    float *G, *R, *zeros, *h, *c, *aux;
} step_scratch;

static size_t carve_step_scratch(const charrnn_config *config, size_t S, float *block,
                                 step_scratch *out) {
    const cell_kind *cell = cell_of(config);
    gate_widths w = widths_of(cell, (size_t)config->hidden_size);
    size_t L = (size_t)config->num_layers, off = 0;
    step_scratch unused; /* counting only: the slots need somewhere to be */
    if (!out) out = &unused;
    size_t sizes[6] = {S * w.GH, S * w.SH, w.GH, L * S * w.H,
                       cell->states > 1 ? L * S * w.H : 0, cell->has_aux ? S * w.H : 0};
    float **slots[6] = {&out->G, &out->R, &out->zeros, &out->h, &out->c, &out->aux};
    for (int i = 0; i < 6; i++) {
        if (block) *slots[i] = sizes[i] ? block + off : NULL;
        off += (sizes[i] + 15) & ~(size_t)15;
    }
    return off;
}

charrnn_status charrnn_step_scratch_count(const charrnn_config *config, int32_t streams,
                                          size_t *count) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!count) return CHARRNN_ERR_NULL_POINTER;
    if (streams < 1 || streams > CHARRNN_MAX_STREAMS) return CHARRNN_ERR_INVALID_SHAPE;
    *count = carve_step_scratch(config, (size_t)streams, NULL, NULL);
    return CHARRNN_OK;
}

/* out[s, r] += sum_k W[r, k] x[s, k] for the `rows` rows of W (row-major,
 * leading dimension K); out has leading dimension ldo. */
static void rows_times(const char *name, size_t S, size_t rows, size_t K, const float *W,
                       const float *x, float *out, size_t ldo) {
    if (S == 1)
        gemv_block(name, rows, K, W, x, out);
    else
        gemm_block(name, 0, 1, S, rows, K, 1.0f, x, K, W, K, 1.0f, out, ldo);
}

charrnn_status charrnn_step(const charrnn_config *config, const float *params, int32_t streams,
                            const int32_t *tokens, float *state, float *scratch, float *logits) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!params || !tokens || !state || !scratch || !logits) return CHARRNN_ERR_NULL_POINTER;
    if (streams < 1 || streams > CHARRNN_MAX_STREAMS) return CHARRNN_ERR_INVALID_SHAPE;
    for (int32_t i = 0; i < streams; i++)
        if (tokens[i] < 0 || tokens[i] >= config->vocab_size) return CHARRNN_ERR_TOKEN_OUT_OF_RANGE;

    threads_wait_actively();
    const cell_kind *cell = cell_of(config);
    size_t S = (size_t)streams, H = (size_t)config->hidden_size, V = (size_t)config->vocab_size;
    size_t L = (size_t)config->num_layers, plane = S * H;
    gate_widths w = widths_of(cell, H);
    param_tensors p;
    step_scratch x;
    carve_params(config, (float *)params, &p);
    carve_step_scratch(config, S, scratch, &x);

#pragma omp parallel
    {
        int thread = omp_get_thread_num(), threads = omp_get_num_threads();
        size_t u0, u1;
        thread_range(H, thread, threads, 16, &u0, &u1);
        for (size_t q = 0; q < (size_t)cell->gates; q++)
            for (size_t j = u0; j < u1; j++) x.zeros[q * H + j] = 0.0f;
        for (size_t l = 0; l < L; l++) {
            const float *in = l > 0 ? x.h + (l - 1) * plane : NULL;
            const float *h_old = state + l * plane;
            /* The whole input term goes into G first (biases, and layer 0's
             * one-hot column of W_ih), then the products accumulate. */
            const float *b_ih = p.bias_ih[l], *b_hh = p.bias_hh[l];
            for (size_t st = 0; st < S; st++) {
                float *g = x.G + st * w.GH;
                const float *column = l == 0 ? p.weight_ih[0] + (size_t)tokens[st] : NULL;
                for (size_t q = 0; q < (size_t)cell->gates; q++) {
                    size_t row0 = q * H;
                    int folded = row0 < w.FH; /* b_hh joins the input term */
                    for (size_t j = u0; j < u1; j++)
                        g[row0 + j] = folded ? b_ih[row0 + j] + b_hh[row0 + j] : b_ih[row0 + j];
                    if (column)
                        for (size_t j = u0; j < u1; j++) g[row0 + j] += column[(row0 + j) * V];
                    if (!folded)
                        for (size_t j = u0; j < u1; j++) x.R[st * w.SH + row0 - w.FH + j] = 0.0f;
                }
            }
            for (size_t q = 0; q < (size_t)cell->gates && u1 > u0; q++) {
                size_t row0 = q * H + u0;
                if (l > 0) rows_times("step input", S, u1 - u0, H, p.weight_ih[l] + row0 * H, in, x.G + row0, w.GH);
                if (row0 < w.FH)
                    rows_times("step recurrent", S, u1 - u0, H, p.weight_hh[l] + row0 * H, h_old, x.G + row0, w.GH);
                else
                    rows_times("step recurrent, split blocks", S, u1 - u0, H, p.weight_hh[l] + row0 * H,
                               h_old, x.R + row0 - w.FH, w.SH);
            }
            cell_forward_args args = {
                .H = H, .u0 = u0, .u1 = u1, .b0 = 0, .b1 = S,
                .G = x.G, .R = x.R, .x_rows = x.zeros, .tokens = NULL, .token_stride = 0,
                .b_split = p.bias_hh[l] + w.FH,
                .h_prev = h_old, .c_prev = x.c ? state + (L + l) * plane : NULL,
                .h = x.h + l * plane, .c = x.c ? x.c + l * plane : NULL, .aux = x.aux,
            };
            cell->forward(&args);
            /* the next layer, and the logits, read every unit of the new h */
            THREADS_BARRIER;
        }
        /* Every product that read the old h is done (barrier above); each
         * thread copies its own units of the new state. */
        size_t planes = (size_t)cell->states * L;
        for (size_t k = 0; k < planes; k++) {
            const float *src = k < L ? x.h + k * plane : x.c + (k - L) * plane;
            for (size_t st = 0; st < S; st++)
                for (size_t j = u0; j < u1; j++) state[k * plane + st * H + j] = src[st * H + j];
        }

        size_t v0, v1;
        thread_range(V, thread, threads, 8, &v0, &v1);
        for (size_t st = 0; st < S; st++)
            for (size_t v = v0; v < v1; v++) logits[st * V + v] = p.fc_bias[v];
        rows_times("step logits", S, v1 - v0, H, p.fc_weight + v0 * H, x.h + (L - 1) * plane, logits + v0, V);
    }
    return CHARRNN_OK;
}

/* ---- the caller's random generator: xoshiro256** seeded by splitmix64 ---- */

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(charrnn_rng *rng) {
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

charrnn_status charrnn_rng_seed(charrnn_rng *rng, uint64_t seed) {
    if (!rng) return CHARRNN_ERR_NULL_POINTER;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        x += 0x9E3779B97F4A7C15ULL;
        rng->s[i] = splitmix64_mix(x);
    }
    return CHARRNN_OK;
}

charrnn_status charrnn_rng_uniform(charrnn_rng *rng, double *value) {
    if (!rng || !value) return CHARRNN_ERR_NULL_POINTER;
    *value = (double)(rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
    return CHARRNN_OK;
}

/* ---- drawing a token ---- */

charrnn_sampling_params charrnn_sampling_default_params(void) {
    charrnn_sampling_params p = {1.0f, 0, 1.0f, 0};
    return p;
}

charrnn_status charrnn_sample_scratch_size(int32_t vocab_size, size_t *bytes) {
    if (!bytes) return CHARRNN_ERR_NULL_POINTER;
    if (vocab_size < 1 || vocab_size > CHARRNN_MAX_VOCAB) return CHARRNN_ERR_INVALID_CONFIG;
    *bytes = 8 * (size_t)vocab_size;
    return CHARRNN_OK;
}

/* The order of the nucleus: more likely first, ties by lower index. */
static int comes_first(const float *p, int32_t a, int32_t b) {
    return p[a] > p[b] || (p[a] == p[b] && a < b);
}

/* Heap sort of order[0..n) by comes_first: deterministic, no allocation,
 * O(V log V) for any vocabulary. */
static void sift_down(const float *p, int32_t *h, size_t root, size_t n) {
    while (2 * root + 1 < n) {
        size_t child = 2 * root + 1, last = root;
        if (comes_first(p, h[last], h[child])) last = child;
        if (child + 1 < n && comes_first(p, h[last], h[child + 1])) last = child + 1;
        if (last == root) return;
        int32_t t = h[root];
        h[root] = h[last];
        h[last] = t;
        root = last;
    }
}

/* The k most likely into order[0..k), most likely first: insertion into a
 * short sorted list, O(V k), for the usual small top-k without top-p. */
static void select_most_likely(const float *p, int32_t *order, size_t n, size_t k) {
    size_t filled = 0;
    for (size_t v = 0; v < n; v++) {
        if (filled == k && !comes_first(p, (int32_t)v, order[k - 1])) continue;
        size_t i = filled < k ? filled++ : k - 1;
        while (i > 0 && comes_first(p, (int32_t)v, order[i - 1])) {
            order[i] = order[i - 1];
            i--;
        }
        order[i] = (int32_t)v;
    }
}

static void sort_by_probability(const float *p, int32_t *order, size_t n) {
    for (size_t i = 0; i < n; i++) order[i] = (int32_t)i;
    for (size_t start = n / 2; start-- > 0;) sift_down(p, order, start, n);
    for (size_t end = n; end-- > 1;) {
        int32_t t = order[0];
        order[0] = order[end];
        order[end] = t;
        sift_down(p, order, 0, end);
    }
}

charrnn_status charrnn_sample(const float *logits, int32_t vocab_size,
                              const charrnn_sampling_params *params, charrnn_rng *rng,
                              void *scratch, float *probs, int32_t *token) {
    if (!logits || !params || !token) return CHARRNN_ERR_NULL_POINTER;
    if (vocab_size < 1 || vocab_size > CHARRNN_MAX_VOCAB) return CHARRNN_ERR_INVALID_CONFIG;
    float T = params->temperature;
    if (!(T >= 0.0f) || isinf(T)) return CHARRNN_ERR_INVALID_ARGUMENT;
    if (params->top_k < 0 || params->top_k > vocab_size) return CHARRNN_ERR_INVALID_ARGUMENT;
    if (!(params->top_p > 0.0f && params->top_p <= 1.0f)) return CHARRNN_ERR_INVALID_ARGUMENT;
    int greedy = params->greedy || T == 0.0f;
    if (!greedy && (!rng || !scratch)) return CHARRNN_ERR_NULL_POINTER;

    size_t V = (size_t)vocab_size, best = 0;
    for (size_t v = 0; v < V; v++) {
        if (!isfinite(logits[v])) return CHARRNN_ERR_NON_FINITE;
        if (logits[v] > logits[best]) best = v;
    }
    if (greedy) {
        if (probs) {
            memset(probs, 0, V * sizeof(float));
            probs[best] = 1.0f;
        }
        *token = (int32_t)best;
        return CHARRNN_OK;
    }

    /* softmax(logits / T), exact libm exp: V is small and this is per character */
    float *p = (float *)scratch;
    int32_t *order = (int32_t *)((char *)scratch + 4 * V);
    double max = logits[best], sum = 0.0;
    for (size_t v = 0; v < V; v++) {
        p[v] = (float)exp(((double)logits[v] - max) / (double)T);
        sum += p[v];
    }
    for (size_t v = 0; v < V; v++) p[v] = (float)(p[v] / sum);

    size_t kept = V;
    int truncated = (params->top_k > 0 && (size_t)params->top_k < V) || params->top_p < 1.0f;
    if (truncated && params->top_p >= 1.0f && params->top_k <= 32) {
        kept = (size_t)params->top_k;
        select_most_likely(p, order, V, kept);
    } else if (truncated) {
        sort_by_probability(p, order, V);
        if (params->top_k > 0 && (size_t)params->top_k < kept) kept = (size_t)params->top_k;
        if (params->top_p < 1.0f) {
            double cumulative = 0.0;
            for (size_t i = 0; i < kept; i++) {
                cumulative += p[order[i]];
                if (cumulative >= (double)params->top_p) {
                    kept = i + 1;
                    break;
                }
            }
        }
    } else {
        for (size_t v = 0; v < V; v++) order[v] = (int32_t)v;
    }
    double total = 0.0;
    for (size_t i = 0; i < kept; i++) total += p[order[i]];

    double u;
    charrnn_rng_uniform(rng, &u);
    u *= total;
    double acc = 0.0;
    int32_t chosen = -1, last_positive = (int32_t)best;
    for (size_t i = 0; i < kept && chosen < 0; i++) {
        if (p[order[i]] <= 0.0f) continue;
        acc += p[order[i]];
        last_positive = order[i];
        if (u < acc) chosen = order[i];
    }
    if (chosen < 0) chosen = last_positive; /* rounding left u at the very end */
    if (probs) {
        memset(probs, 0, V * sizeof(float));
        for (size_t i = 0; i < kept; i++) probs[order[i]] = (float)(p[order[i]] / total);
    }
    *token = chosen;
    return CHARRNN_OK;
}

charrnn_status charrnn_step_products(const charrnn_config *config, const float *params,
                                     int32_t streams, float *state, float *scratch,
                                     float *logits) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!params || !state || !scratch || !logits) return CHARRNN_ERR_NULL_POINTER;
    if (streams < 1 || streams > CHARRNN_MAX_STREAMS) return CHARRNN_ERR_INVALID_SHAPE;
    threads_wait_actively();
    const cell_kind *cell = cell_of(config);
    size_t S = (size_t)streams, H = (size_t)config->hidden_size, V = (size_t)config->vocab_size;
    size_t L = (size_t)config->num_layers, plane = S * H;
    gate_widths w = widths_of(cell, H);
    param_tensors p;
    step_scratch x;
    carve_params(config, (float *)params, &p);
    carve_step_scratch(config, S, scratch, &x);
#pragma omp parallel
    {
        int thread = omp_get_thread_num(), threads = omp_get_num_threads();
        size_t u0, u1;
        thread_range(H, thread, threads, 16, &u0, &u1);
        for (size_t l = 0; l < L; l++) {
            for (size_t q = 0; q < (size_t)cell->gates && u1 > u0; q++) {
                size_t row0 = q * H + u0;
                if (l > 0) rows_times("step input", S, u1 - u0, H, p.weight_ih[l] + row0 * H, x.h + (l - 1) * plane, x.G + row0, w.GH);
                if (row0 < w.FH)
                    rows_times("step recurrent", S, u1 - u0, H, p.weight_hh[l] + row0 * H, state + l * plane, x.G + row0, w.GH);
                else
                    rows_times("step recurrent, split blocks", S, u1 - u0, H, p.weight_hh[l] + row0 * H, state + l * plane, x.R + row0 - w.FH, w.SH);
            }
            THREADS_BARRIER;
        }
        size_t v0, v1;
        thread_range(V, thread, threads, 8, &v0, &v1);
        rows_times("step logits", S, v1 - v0, H, p.fc_weight + v0 * H, x.h + (L - 1) * plane, logits + v0, V);
    }
    return CHARRNN_OK;
}
