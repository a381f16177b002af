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


/* A row of H values rounded to bf16 takes Hp = H rounded up to even: the
 * packed weights' pairs are whole, and an odd H's pad is a zero. */
static size_t bf16_row_width(size_t H) { return (H + 1) & ~(size_t)1; }

/* Floats that hold `count` bf16 values. */
static size_t floats_for_bf16(size_t count) { return (count + 1) / 2; }

/* The step's scratch, carved from one block (each region 16-float aligned):
 *   G [S, GH]: pre-activations, then activated gates; R [S, SH]: the split
 *   blocks' recurrent products; zeros [GH]: the input row the cell's kernel
 *   adds. The step puts the whole input term into G itself, before the
 *   products, as it always has: the LSTM's logits then keep their rounding,
 *   and a checkpoint its text for a given seed; h [L, S, H] and
 *   c [L, S, H] (two-state cells): the new state, copied into the caller's
 *   once every product has read the old one; aux [S, H]: the cell's aux
 *   values, unused here; hb [2, L, S, Hp]: bf16 steps only, the old
 *   state's h and the new h rounded to bf16, the products' inputs. */
typedef struct {
    float *G, *R, *zeros, *h, *c, *aux, *hb;
} step_scratch;

/* Points slots[i] at consecutive regions of sizes[i] floats in block (NULL
 * for an empty one), each starting on a 16-float boundary; returns the
 * floats they take. With block NULL it only counts. */
static size_t carve_regions(float *block, const size_t *sizes, float **const *slots, int count) {
    size_t off = 0;
    for (int i = 0; i < count; i++) {
        if (block) *slots[i] = sizes[i] ? block + off : NULL;
        off += (sizes[i] + 15) & ~(size_t)15;
    }
    return off;
}

static size_t carve_step_scratch(const charrnn_config *config, size_t S, float *block,
                                 step_scratch *out) {
    const cell_kind *cell = cell_of(config);
    gate_widths w = widths_of(cell, (size_t)config->hidden_size);
    size_t L = (size_t)config->num_layers;
    step_scratch unused; /* counting only: the slots need somewhere to be */
    if (!out) out = &unused;
    size_t sizes[7] = {S * w.GH, S * w.SH, w.GH, L * S * w.H,
                       cell->states > 1 ? L * S * w.H : 0, cell->has_aux ? S * w.H : 0,
                       floats_for_bf16(2 * L * S * bf16_row_width(w.H))};
    float **slots[7] = {&out->G, &out->R, &out->zeros, &out->h, &out->c, &out->aux, &out->hb};
    return carve_regions(block, sizes, slots, 7);
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

/* One product of the step or the prime: rows [row0, row0 + rows) of a
 * weight matrix times S inputs, added to out (leading dimension ldo). In
 * fp32 (Wb NULL): W32's rows and the inputs x (leading dimension K); in
 * bf16: the packed Wb and the inputs rounded to bf16, xb (leading
 * dimension ldxb). */
static void product_rows(const char *name, const float *W32, const bf16_matrix *Wb, size_t row0,
                         size_t rows, size_t K, size_t S, const float *x, const uint16_t *xb,
                         size_t ldxb, float *out, size_t ldo) {
    if (Wb)
        bf16_rows_times(Wb, row0, rows, S, xb, ldxb, out, ldo);
    else
        rows_times(name, S, rows, K, W32 + row0 * K, x, out, ldo);
}

/* Rounds units [u0, u1) of `count` rows of H values (x, leading dimension
 * H) to bf16 rows of width Hp (out); the thread with u0 == 0 also writes
 * each row's pad, so together a team's calls fill every row. */
static void round_units(const float *x, size_t count, size_t H, size_t u0, size_t u1, uint16_t *out) {
    size_t Hp = bf16_row_width(H);
    for (size_t r = 0; r < count; r++) {
        bf16_round_row(x + r * H + u0, u1 - u0, out + r * Hp + u0);
        if (u0 == 0 && Hp > H) out[r * Hp + H] = 0;
    }
}

/* charrnn_step, in fp32 (packed NULL) or with the packed bf16 weights. */
static charrnn_status step(const charrnn_config *config, const float *params, const uint16_t *packed,
                           int32_t streams, const int32_t *tokens, float *state, float *scratch,
                           float *logits) {
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
    bf16_weights b;
    carve_params(config, (float *)params, &p);
    carve_step_scratch(config, S, scratch, &x);
    if (packed) carve_bf16_weights(config, packed, &b);
    /* bf16: the old h and the new h of each layer, rounded as each is known */
    size_t Hp = bf16_row_width(H), bplane = S * Hp;
    uint16_t *hb_old = (uint16_t *)x.hb, *hb_new = hb_old + L * bplane;

#pragma omp parallel
    {
        int thread = omp_get_thread_num(), threads = omp_get_num_threads();
        size_t u0, u1;
        thread_range(H, thread, threads, 16, &u0, &u1);
        for (size_t q = 0; q < (size_t)cell->gates; q++)
            for (size_t j = u0; j < u1; j++) x.zeros[q * H + j] = 0.0f;
        if (packed) {
            round_units(state, L * S, H, u0, u1, hb_old);
            THREADS_BARRIER; /* every product reads all of a layer's old h */
        }
        for (size_t l = 0; l < L; l++) {
            const float *in = l > 0 ? x.h + (l - 1) * plane : NULL;
            const float *h_old = state + l * plane;
            const uint16_t *in_b = l > 0 ? hb_new + (l - 1) * bplane : NULL, *h_old_b = hb_old + l * bplane;
            const bf16_matrix *W_ih = packed ? &b.weight_ih[l] : NULL, *W_hh = packed ? &b.weight_hh[l] : NULL;
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
                if (l > 0)
                    product_rows("step input", p.weight_ih[l], W_ih, row0, u1 - u0, H, S, in, in_b, Hp,
                                 x.G + row0, w.GH);
                if (row0 < w.FH)
                    product_rows("step recurrent", p.weight_hh[l], W_hh, row0, u1 - u0, H, S, h_old,
                                 h_old_b, Hp, x.G + row0, w.GH);
                else
                    product_rows("step recurrent, split blocks", p.weight_hh[l], W_hh, row0, u1 - u0, H,
                                 S, h_old, h_old_b, Hp, x.R + row0 - w.FH, w.SH);
            }
            cell_forward_args args = {
                .H = H, .u0 = u0, .u1 = u1, .b0 = 0, .b1 = S,
                .G = x.G, .R = x.R, .x_rows = x.zeros, .tokens = NULL, .token_stride = 0,
                .b_split = p.bias_hh[l] + w.FH,
                .h_prev = h_old, .c_prev = x.c ? state + (L + l) * plane : NULL,
                .h = x.h + l * plane, .c = x.c ? x.c + l * plane : NULL, .aux = x.aux,
            };
            cell->forward(&args);
            if (packed) round_units(x.h + l * plane, S, H, u0, u1, hb_new + l * bplane);
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
        product_rows("step logits", p.fc_weight, packed ? &b.fc_weight : NULL, v0, v1 - v0, H, S,
                     x.h + (L - 1) * plane, hb_new + (L - 1) * bplane, Hp, logits + v0, V);
    }
    return CHARRNN_OK;
}

charrnn_status charrnn_step(const charrnn_config *config, const float *params, int32_t streams,
                            const int32_t *tokens, float *state, float *scratch, float *logits) {
    return step(config, params, NULL, streams, tokens, state, scratch, logits);
}

charrnn_status charrnn_step_bf16(const charrnn_config *config, const float *params,
                                 const uint16_t *weights, int32_t streams, const int32_t *tokens,
                                 float *state, float *scratch, float *logits) {
    if (!weights) return CHARRNN_ERR_NULL_POINTER;
    return step(config, params, weights, streams, tokens, state, scratch, logits);
}

/* ========================================================================
 * Priming: a run of known characters into one stream's state.
 *
 * charrnn_step at S = 1 reads every weight once per character. A prime's
 * characters are all known at once, so each layer's input term is made for
 * all of them before its recurrence (layer 0: the token's column of W_ih;
 * above: one product over the T outputs the layer below has just made),
 * each layer runs through all T steps before the next starts (its W_hh is
 * the only matrix the steps read), and the output layer runs once, after
 * the last character. Per step the arithmetic is charrnn_step's: the input
 * term put into G, the same sgemv for W_hh h accumulating onto it, the same
 * cell kernel, the same logits. So layer 0 rounds exactly as charrnn_step
 * (a one-layer model primes to the same bits as stepped); above it W_ih x
 * is summed in input_products's order rather than sgemv's.
 * ======================================================================== */

/* Scratch: X [T, GH] every step's input term (biases included); Y [T, H]
 * the layer's outputs, the next layer's inputs; G [GH], R [SH]: one step's
 * pre-activations and split recurrent products; zeros [GH]: the input row
 * the cell's kernel adds (the term is in G already, as in charrnn_step);
 * c [2, H]: the cell state, alternating (two-state cells); aux [H]: the
 * cell's aux values, unused; Yb [T, Hp] and h0b [Hp]: bf16 primes only,
 * Y and the layer's initial h rounded to bf16, the products' inputs. */
typedef struct {
    float *X, *Y, *G, *R, *zeros, *c, *aux, *Yb, *h0b;
} prime_scratch;

static size_t carve_prime_scratch(const charrnn_config *config, size_t T, float *block,
                                  prime_scratch *out) {
    const cell_kind *cell = cell_of(config);
    gate_widths w = widths_of(cell, (size_t)config->hidden_size);
    prime_scratch unused;
    if (!out) out = &unused;
    size_t Hp = bf16_row_width(w.H);
    size_t sizes[9] = {T * w.GH, T * w.H, w.GH, w.SH, w.GH, cell->states > 1 ? 2 * w.H : 0,
                       cell->has_aux ? w.H : 0, floats_for_bf16(T * Hp), floats_for_bf16(Hp)};
    float **slots[9] = {&out->X, &out->Y, &out->G, &out->R, &out->zeros, &out->c, &out->aux,
                        &out->Yb, &out->h0b};
    return carve_regions(block, sizes, slots, 9);
}

charrnn_status charrnn_prime_scratch_count(const charrnn_config *config, int32_t steps,
                                           size_t *count) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!count) return CHARRNN_ERR_NULL_POINTER;
    if ((s = check_batch_shape(1, steps)) != CHARRNN_OK) return s;
    *count = carve_prime_scratch(config, (size_t)steps, NULL, NULL);
    return CHARRNN_OK;
}

typedef float lanes8 __attribute__((vector_size(32), aligned(4), may_alias));

/* sum_k a[k] b[k] in the one order every element of the input product
 * uses: eight lanes (lane i sums k = i, i + 8, ...), folded 8 -> 4 -> 2 ->
 * 1, then the k past the last full eight one by one. It depends on K
 * alone, so a row's result never depends on the rows made with it (how a
 * prime is cut into calls). */
static inline __attribute__((always_inline)) float fold_lanes(const lanes8 *lanes) {
    lanes8 acc = *lanes; /* by pointer: a vector argument's ABI changes with the target */
    float a = (acc[0] + acc[4]) + (acc[2] + acc[6]), b = (acc[1] + acc[5]) + (acc[3] + acc[7]);
    return a + b;
}

/* out[t, j] = bias[j] + sum_k W[j, k] x[t, k] for rows [0, T) and columns
 * [j0, j1) (out and x row-major with leading dimensions GH and K). Tiles of
 * two rows by four columns, each element with fold_lanes's order; blocks
 * of 32 rows, so a tile's four rows of W stay in L1 across the block and
 * the block's inputs in L2 across the columns. */
CHARRNN_VECTOR_CLONES static void input_products(size_t T, size_t K, size_t GH, size_t j0,
                                                 size_t j1, const float *W, const float *x,
                                                 const float *bias, float *out) {
    size_t K8 = K & ~(size_t)7;
    for (size_t t0 = 0; t0 < T; t0 += 32) {
        size_t t1 = t0 + 32 < T ? t0 + 32 : T;
        for (size_t j = j0; j < j1; j += 4) {
            size_t cols = j1 - j < 4 ? j1 - j : 4;
            for (size_t t = t0; t < t1; t += 2) {
                size_t rows = t1 - t < 2 ? t1 - t : 2;
                const float *x0 = x + t * K, *x1 = x + (t + rows - 1) * K;
                const float *w[4];
                for (size_t q = 0; q < 4; q++) w[q] = W + (j + (q < cols ? q : cols - 1)) * K;
                lanes8 acc[2][4] = {{{0}}};
                for (size_t k = 0; k < K8; k += 8) {
                    lanes8 a0 = *(const lanes8 *)(x0 + k), a1 = *(const lanes8 *)(x1 + k);
                    for (size_t q = 0; q < 4; q++) {
                        lanes8 wq = *(const lanes8 *)(w[q] + k);
                        acc[0][q] += a0 * wq;
                        acc[1][q] += a1 * wq;
                    }
                }
                for (size_t r = 0; r < rows; r++) {
                    const float *xr = r ? x1 : x0;
                    for (size_t q = 0; q < cols; q++) {
                        float sum = fold_lanes(&acc[r][q]);
                        for (size_t k = K8; k < K; k++) sum += xr[k] * w[q][k];
                        out[(t + r) * GH + j + q] = sum + bias[j + q];
                    }
                }
            }
        }
    }
}

/* charrnn_prime, in fp32 (packed NULL) or with the packed bf16 weights.
 * In bf16 every product is bf16_rows_times, whose rows do not depend on
 * how they are grouped, and the input term is put together as the step
 * does (biases, then the product added): so a bf16 prime gives the bits of
 * bf16 steps, in every layer. */
static charrnn_status prime(const charrnn_config *config, const float *params, const uint16_t *packed,
                            int32_t steps, const int32_t *tokens, float *state, float *scratch,
                            float *logits) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!params || !tokens || !state || !scratch) return CHARRNN_ERR_NULL_POINTER;
    if ((s = check_batch_shape(1, steps)) != CHARRNN_OK) return s;
    for (int32_t t = 0; t < steps; t++)
        if (tokens[t] < 0 || tokens[t] >= config->vocab_size) return CHARRNN_ERR_TOKEN_OUT_OF_RANGE;

    threads_wait_actively();
    const cell_kind *cell = cell_of(config);
    size_t T = (size_t)steps, H = (size_t)config->hidden_size, V = (size_t)config->vocab_size;
    size_t L = (size_t)config->num_layers, gates = (size_t)cell->gates;
    gate_widths w = widths_of(cell, H);
    param_tensors p;
    prime_scratch x;
    bf16_weights b;
    carve_params(config, (float *)params, &p);
    carve_prime_scratch(config, T, scratch, &x);
    if (packed) carve_bf16_weights(config, packed, &b);
    size_t Hp = bf16_row_width(H);
    uint16_t *Yb = (uint16_t *)x.Yb, *h0b = (uint16_t *)x.h0b;

#pragma omp parallel
    {
        int thread = omp_get_thread_num(), threads = omp_get_num_threads();
        size_t u0, u1, j0, j1;
        thread_range(H, thread, threads, 16, &u0, &u1);
        thread_range(w.GH, thread, threads, 16, &j0, &j1);
        for (size_t j = j0; j < j1; j++) x.zeros[j] = 0.0f;
        for (size_t l = 0; l < L; l++) {
            const float *b_ih = p.bias_ih[l], *b_hh = p.bias_hh[l];
            float *h_state = state + l * H, *c_state = state + (L + l) * H;
            /* Every step's input term, in the order charrnn_step adds it:
             * the biases, then layer 0's column of W_ih or the product. */
            if (l == 0) {
                for (size_t t = 0; t < T; t++)
                    for (size_t j = j0; j < j1; j++) {
                        float bias = j < w.FH ? b_ih[j] + b_hh[j] : b_ih[j];
                        x.X[t * w.GH + j] = bias + p.weight_ih[0][j * V + (size_t)tokens[t]];
                    }
            } else if (packed) {
                for (size_t t = 0; t < T; t++)
                    for (size_t j = j0; j < j1; j++) x.X[t * w.GH + j] = j < w.FH ? b_ih[j] + b_hh[j] : b_ih[j];
                if (j1 > j0) bf16_rows_times(&b.weight_ih[l], j0, j1 - j0, T, Yb, Hp, x.X + j0, w.GH);
            } else {
                float *bias = x.G; /* G is free until the recurrence */
                for (size_t j = j0; j < j1; j++) bias[j] = j < w.FH ? b_ih[j] + b_hh[j] : b_ih[j];
                input_products(T, H, w.GH, j0, j1, p.weight_ih[l], x.Y, bias, x.X);
            }
            if (packed) round_units(h_state, 1, H, u0, u1, h0b);
            THREADS_BARRIER; /* the recurrence reads every column; Y is then rewritten */
            for (size_t t = 0; t < T; t++) {
                const float *h_prev = t ? x.Y + (t - 1) * H : h_state;
                const float *c_prev = !x.c ? NULL : t ? x.c + ((t - 1) & 1) * H : c_state;
                /* As charrnn_step: the input term into G, the products onto it. */
                for (size_t q = 0; q < gates; q++)
                    for (size_t j = u0; j < u1; j++) {
                        size_t row = q * H + j;
                        x.G[row] = x.X[t * w.GH + row];
                        if (row >= w.FH) x.R[row - w.FH] = 0.0f;
                    }
                const uint16_t *h_prev_b = t ? Yb + (t - 1) * Hp : h0b;
                const bf16_matrix *W_hh = packed ? &b.weight_hh[l] : NULL;
                for (size_t q = 0; q < gates && u1 > u0; q++) {
                    size_t row0 = q * H + u0;
                    if (row0 < w.FH)
                        product_rows("prime recurrent", p.weight_hh[l], W_hh, row0, u1 - u0, H, 1,
                                     h_prev, h_prev_b, Hp, x.G + row0, w.GH);
                    else
                        product_rows("prime recurrent, split blocks", p.weight_hh[l], W_hh, row0,
                                     u1 - u0, H, 1, h_prev, h_prev_b, Hp, x.R + row0 - w.FH, w.SH);
                }
                cell_forward_args args = {
                    .H = H, .u0 = u0, .u1 = u1, .b0 = 0, .b1 = 1,
                    .G = x.G, .R = x.R, .x_rows = x.zeros, .tokens = NULL, .token_stride = 0,
                    .b_split = b_hh + w.FH,
                    .h_prev = h_prev, .c_prev = c_prev,
                    .h = x.Y + t * H, .c = x.c ? x.c + (t & 1) * H : NULL, .aux = x.aux,
                };
                cell->forward(&args);
                if (packed) round_units(x.Y + t * H, 1, H, u0, u1, Yb + t * Hp);
                THREADS_BARRIER; /* the next step reads every unit of h_t */
            }
            /* The layer's last h and c are its new state (each thread its units). */
            for (size_t j = u0; j < u1; j++) {
                h_state[j] = x.Y[(T - 1) * H + j];
                if (x.c) c_state[j] = x.c[((T - 1) & 1) * H + j];
            }
        }
        if (logits) {
            size_t v0, v1;
            thread_range(V, thread, threads, 8, &v0, &v1);
            for (size_t v = v0; v < v1; v++) logits[v] = p.fc_bias[v];
            product_rows("prime logits", p.fc_weight, packed ? &b.fc_weight : NULL, v0, v1 - v0, H, 1,
                         x.Y + (T - 1) * H, Yb + (T - 1) * Hp, Hp, logits + v0, V);
        }
    }
    return CHARRNN_OK;
}

charrnn_status charrnn_prime(const charrnn_config *config, const float *params, int32_t steps,
                             const int32_t *tokens, float *state, float *scratch, float *logits) {
    return prime(config, params, NULL, steps, tokens, state, scratch, logits);
}

charrnn_status charrnn_prime_bf16(const charrnn_config *config, const float *params,
                                  const uint16_t *weights, int32_t steps, const int32_t *tokens,
                                  float *state, float *scratch, float *logits) {
    if (!weights) return CHARRNN_ERR_NULL_POINTER;
    return prime(config, params, weights, steps, tokens, state, scratch, logits);
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
