/*
 * The model's forward and backward passes over a B x T batch, stage by
 * stage, each forward beside its backward:
 *   input projection   (one-hot lookup for layer 0, one big GEMM above it)
 *   dropout            (inverted, counter-based masks; applied in the recurrence)
 *   recurrence         (per step: recurrent GEMM + the cell's kernel, cells.c)
 *   output layer       (logits GEMM, softmax, cross-entropy)
 *
 * Where the time goes: the products. The inputs of all T steps are
 * projected in one GEMM of N = T*B rows per layer, and every weight gradient
 * is one GEMM with K = N, so per step only the recurrent product [B, H] x
 * [H, GH] and the gate arithmetic remain. The B rows of a batch are
 * independent streams, so in the recurrence each OpenMP thread owns a share
 * of them and carries them through all T steps alone: no barrier per step,
 * no line of the activations shared between cores. BLAS itself runs
 * single-threaded per call.
 *
 * GH = gates*H; the first FH = (gates - split)*H columns are the blocks whose
 * recurrent term folds into G, the last SH = split*H the blocks whose
 * recurrent term stays apart (internal.h). For the LSTM and the RNN, FH = GH.
 *
 * Time-major rows: r = t*B + b. Batches arrive [B, T] (stream-major) as in
 * the notebook; token (b, t) is inputs[b*T + t].
 */
#include "internal.h"

/* How a pass makes its matrix products: in fp32 (BLAS, and the packed
 * kernel for the recurrence where one runs), or in bf16 (bf16.c: inputs
 * rounded to bf16, fp32 sums) in the activation block's bf16 room. */
typedef struct {
    uint16_t *bf16_room; /* NULL: fp32 */
} products;

/* C = op(A) op(B) + beta C, rows split across the team (beta 0 or 1). */
static void product(const products *pr, const char *name, int trans_a, int trans_b, size_t M,
                    size_t N, size_t K, const float *A, size_t lda, const float *B, size_t ldb,
                    float beta, float *C, size_t ldc) {
    if (pr->bf16_room)
        bf16_product_rows_parallel(name, trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc,
                                   pr->bf16_room);
    else
        gemm_rows_parallel(name, trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* ========================================================================
 * Input projection: G[r, :] = W_ih x_r + b_ih + b_hh (folded blocks)
 * ======================================================================== */

/* The input term of every step's pre-activations, before the recurrence.
 * Layer 0: x_r is one-hot, so W_ih x_r is column tok of W_ih [GH, V]. A
 * column is strided in memory (one cache line per gate row), so the V
 * columns, with the biases added, are transposed into the table
 * embed [V, GH], and the recurrence adds row tok of it in its gate kernel:
 * nothing of size N x GH is written here.
 * Layer l > 0: G = X W_ih^T in one GEMM over all N rows; the recurrence adds
 * the biases, summed once into embed's first row.
 * b_hh is folded in only for the first FH columns (the rest is the cell's). */
static void input_projection_forward(const products *pr, size_t B, size_t T, gate_widths w,
                                     size_t V, int layer,
                                     const float *W_ih, const float *b_ih, const float *b_hh,
                                     const float *X, float *embed, float *G) {
    size_t N = T * B, GH = w.GH;
    if (layer == 0) {
#pragma omp parallel for schedule(static)
        for (size_t j = 0; j < GH; j++) {
            float bias = j < w.FH ? b_ih[j] + b_hh[j] : b_ih[j];
            for (size_t v = 0; v < V; v++) embed[v * GH + j] = W_ih[j * V + v] + bias;
        }
    } else {
        for (size_t j = 0; j < GH; j++) embed[j] = j < w.FH ? b_ih[j] + b_hh[j] : b_ih[j];
        product(pr, "input projection", 0, 1, N, GH, w.H, X, w.H, W_ih, w.H, 0.0f, G, GH);
    }
}

CHARRNN_VECTOR_CLONES static void add_into(float *restrict dst, const float *restrict src,
                                           size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

/* dst[j] += sum over the N rows of src [N, ld] of column j, for j in
 * [begin, end), and also[j] += the same for j < also_end (also may be
 * NULL): accumulated in double per chunk of columns. */
static void add_column_sums(size_t N, size_t ld, size_t begin, size_t end, const float *src,
                            float *dst, float *also, size_t also_end) {
    enum { CHUNK = 256 };
    double acc[CHUNK];
    for (size_t j0 = begin; j0 < end; j0 += CHUNK) {
        size_t j1 = j0 + CHUNK < end ? j0 + CHUNK : end;
        for (size_t j = j0; j < j1; j++) acc[j - j0] = 0.0;
        for (size_t r = 0; r < N; r++) {
            const float *d = src + r * ld;
            for (size_t j = j0; j < j1; j++) acc[j - j0] += d[j];
        }
        for (size_t j = j0; j < j1; j++) {
            dst[j] += (float)acc[j - j0];
            if (also && j < also_end) also[j] += (float)acc[j - j0];
        }
    }
}

/* dW_ih += dG^T X; db_ih += column sums of dG, and db_hh too for the folded
 * columns. For the one-hot layer 0 the rows of dG are first summed by input
 * token into embed [V, GH] (contiguous adds), and only those V sums are
 * scattered into the columns of dW_ih; as every row has exactly one token,
 * the bias gradient is the sum of the V token sums. */
static void input_projection_backward(const products *pr, size_t B, size_t T, gate_widths w,
                                      size_t V, int layer,
                                      const int32_t *inputs, const float *dG, const float *X,
                                      float *embed, float *dW_ih, float *db_ih, float *db_hh) {
    size_t N = T * B, GH = w.GH;
    if (layer > 0) {
        product(pr, "dW_ih", 1, 0, GH, w.H, N, dG, GH, X, w.H, 1.0f, dW_ih, w.H);
    }
#pragma omp parallel
    {
        /* Each thread owns a range of the GH gate rows, so nothing races. */
        size_t begin, end;
        thread_range(GH, omp_get_thread_num(), omp_get_num_threads(), 16, &begin, &end);
        if (layer == 0 && end > begin) {
            for (size_t v = 0; v < V; v++)
                memset(embed + v * GH + begin, 0, (end - begin) * sizeof(float));
            for (size_t r = 0; r < N; r++) {
                size_t tok = (size_t)inputs[(r % B) * T + r / B];
                add_into(embed + tok * GH + begin, dG + r * GH + begin, end - begin);
            }
            for (size_t j = begin; j < end; j++) {
                double sum = 0.0;
                for (size_t v = 0; v < V; v++) {
                    float d = embed[v * GH + j];
                    dW_ih[j * V + v] += d;
                    sum += d;
                }
                db_ih[j] += (float)sum;
                if (j < w.FH) db_hh[j] += (float)sum;
            }
        } else if (end > begin) {
            add_column_sums(N, GH, begin, end, dG, db_ih, db_hh, w.FH);
        }
    }
}

/* db_hh of the split blocks += column sums of dR [N, SH], split across the
 * team by columns. */
static void split_bias_backward(size_t N, size_t SH, const float *dR, float *db) {
#pragma omp parallel
    {
        size_t begin, end;
        thread_range(SH, omp_get_thread_num(), omp_get_num_threads(), 16, &begin, &end);
        add_column_sums(N, SH, begin, end, dR, db, NULL, 0);
    }
}

/* ========================================================================
 * Dropout on a layer's output: y = h * mask, mask in {0, 1/keep}.
 * Applied by the recurrence to each step's h as soon as it is made, while h
 * is in cache. Its backward, dh = dy * mask, is one multiply inside
 * the cell's backward kernel, which reads dy anyway.
 * ======================================================================== */

typedef struct {
    uint64_t seed;
    uint64_t first;     /* draw index of the layer's element (0, 0): layer*N*H */
    uint64_t streams;   /* S: streams in the whole batch (a row's draws are t*S + stream) */
    uint64_t offset;    /* this batch's row 0 is stream `offset` of the whole */
    uint64_t threshold; /* keep iff the draw's top 24 bits < threshold */
    float scale;        /* 1 / keep_prob */
    int active;         /* keep_prob < 1 */
} dropout_params;

/* Element (r, j) of layer l's mask is draw (l*N + r)*H + j of the seed's
 * stream, r counting rows of the whole batch (N = T * S of them), so a
 * process holding streams [offset, offset + B) of S draws what one process
 * holding all S would: kept iff uniform_at() < keep_prob, decided in
 * integers (the draw's 24 bits against keep_prob * 2^24 rounded up: the
 * same decision) so that the hash vectorises. */
static dropout_params dropout_setup(const charrnn_batch *batch, size_t H, int layer, float keep_prob,
                                    uint64_t seed) {
    dropout_params d;
    d.seed = seed;
    d.streams = (uint64_t)(batch->total_streams > 0 ? batch->total_streams : batch->batch_size);
    d.offset = batch->total_streams > 0 ? (uint64_t)batch->first_stream : 0;
    d.first = (uint64_t)layer * (uint64_t)batch->steps * d.streams * H;
    d.threshold = (uint64_t)ceil((double)keep_prob * 16777216.0);
    d.scale = 1.0f / keep_prob;
    d.active = keep_prob < 1.0f;
    return d;
}

/* Rows [b0, b1) of step t: h, mask and y point at the step's row 0. */
CHARRNN_VECTOR_CLONES static void dropout_forward(const dropout_params *d, size_t t, size_t b0,
                                                  size_t b1, size_t H, const float *restrict h,
                                                  float *restrict mask, float *restrict y) {
    uint64_t seed = d->seed, threshold = d->threshold;
    float scale = d->scale;
    for (size_t b = b0; b < b1; b++) {
        const float *restrict hb = h + b * H;
        float *restrict mb = mask + b * H, *restrict yb = y + b * H;
        if (d->active) {
            uint64_t first = d->first + (t * d->streams + d->offset + b) * H;
#pragma omp simd
            for (size_t j = 0; j < H; j++) {
                uint64_t z = splitmix64_mix(seed + 0x9E3779B97F4A7C15ULL * (first + j + 1));
                float m = (z >> 40) < threshold ? scale : 0.0f;
                mb[j] = m;
                yb[j] = hb[j] * m;
            }
        } else {
            for (size_t j = 0; j < H; j++) mb[j] = 1.0f;
            memcpy(yb, hb, H * sizeof(float));
        }
    }
}

/* ========================================================================
 * Recurrence over T steps: per step the recurrent products, then the
 * cell's kernel (cells.c), then dropout.
 *
 * Threads split the batch's B streams (rows), not the hidden units: a
 * stream's step t needs only its own h_{t-1}, so a thread runs its rows
 * through all T steps without waiting for the others, and every line of
 * G, c, h, mask, y and their gradients is written and read by one core.
 * (Splitting the units instead needs a barrier per step, and each step's
 * h_t or dG_t crosses between cores; on this kind of server CPU the
 * hardware prefetchers then also pull the neighbour's lines away, which
 * made the gate arithmetic on two threads slower than on one.) The price
 * is that every thread multiplies by all of W_hh each step.
 *
 * Where a packed kernel runs (panels.c), W_hh is packed once per layer and
 * pass, before the T steps, and every step's product reads the panels.
 * ======================================================================== */

/* W_hh packed in bf16 for the recurrent products of one layer: forward,
 * W_hh [GH, H] whole (the folded rows, then the split); backward, its
 * transpose in two parts, [H, FH] and [H, SH]. rows: room for each step's
 * inputs rounded, [B, row_stride]: one stride for every product, so a
 * thread's rows never overlap another's whatever the width it rounds. */
typedef struct {
    bf16_matrix weights, split;
    uint16_t *rows;
    size_t row_stride;
} bf16_recurrent;

static void pack_recurrent_bf16(gate_widths w, const float *W_hh, uint16_t *room, int backward,
                                bf16_recurrent *out) {
    size_t H = w.H;
    if (backward) {
        bf16_pack_parallel(1, W_hh, H, H, w.FH, room, &out->weights);
        room += bf16_packed_count(H, w.FH);
        if (w.SH) {
            bf16_pack_parallel(1, W_hh + w.FH * H, H, H, w.SH, room, &out->split);
            room += bf16_packed_count(H, w.SH);
        }
    } else {
        bf16_pack_parallel(0, W_hh, H, w.GH, H, room, &out->weights);
        room += bf16_packed_count(w.GH, H);
    }
    out->rows = room;
    out->row_stride = 2 * (((H > w.FH ? H : w.FH) + 1) / 2);
}

/* Rows [b0, b1) of out (+)= x W[row0:row0+rows]^T in bf16: x's rows
 * (K = W's columns, stride ldx_in) rounded into bf->rows first unless
 * they are there already; recorded as the sgemm it replaces. */
static void bf16_recurrent_product(const char *name, const bf16_matrix *W, size_t row0,
                                   size_t rows, size_t b0, size_t b1, const float *x,
                                   size_t ldx_in, int rounded, const bf16_recurrent *bf,
                                   int accumulate, float *out, size_t ldo) {
    double start = products_logged() ? product_clock() : -1.0;
    size_t K = W->cols, ldx = bf->row_stride;
    uint16_t *x_rows = bf->rows;
    if (!rounded) bf16_round_rows(0, x, ldx_in, b0, b1, K, x_rows, ldx);
    if (!accumulate)
        for (size_t b = b0; b < b1; b++) memset(out + b * ldo, 0, rows * sizeof(float));
    bf16_rows_times(W, row0, rows, b1 - b0, x_rows + b0 * ldx, ldx, out + b0 * ldo, ldo);
    if (start >= 0.0)
        record_product(name, 0, 1, b1 - b0, rows, K, out + b0 * ldo, product_clock() - start);
}

/* W_hh packed for the recurrent products of one layer, forward (the folded
 * rows' panels, then the split rows') or backward (W_hh as [GH, H]);
 * NULL, with nothing packed, where BLAS makes them from W_hh. */
static const float *pack_recurrent(gate_widths w, const float *W_hh, float *panels,
                                   int backward) {
    if (!panels) return NULL;
    if (backward) {
        pack_panels(0, W_hh, w.H, w.H, w.GH, panels);
    } else {
        pack_panels(1, W_hh, w.H, w.FH, w.H, panels);
        if (w.SH) pack_panels(1, W_hh + w.FH * w.H, w.H, w.SH, w.H, panels + panel_count(w.FH, w.H));
    }
    return panels;
}

/* Rows [b0, b1) of step t's recurrent terms: G_t's folded columns
 * = h_{t-1} W_hh[:FH]^T + beta G_t (beta 0 for layer 0, where G holds
 * nothing yet; 1 above it, where G holds the input projection), and
 * R_t = h_{t-1} W_hh[FH:]^T for the split blocks. */
static void recurrent_product(size_t b0, size_t b1, gate_widths w, const float *h_prev,
                              const float *W_hh, const float *panels, const bf16_recurrent *bf,
                              float beta, float *G_t, float *R_t) {
    size_t H = w.H;
    /* Layer 0 (beta 0) has no input product in G: its split columns, which
     * the recurrent product does not write, start at zero too (the kernel
     * adds G and the lookup row in every column). */
    if (beta == 0.0f && w.SH)
        for (size_t b = b0; b < b1; b++) memset(G_t + b * w.GH + w.FH, 0, w.SH * sizeof(float));
    if (bf) {
        bf16_recurrent_product("recurrent", &bf->weights, 0, w.FH, b0, b1, h_prev, H, 0, bf,
                               beta != 0.0f, G_t, w.GH);
        if (w.SH) /* the same rows of h, rounded already */
            bf16_recurrent_product("recurrent, split blocks", &bf->weights, w.FH, w.SH, b0, b1,
                                   h_prev, H, 1, bf, 0, R_t, w.SH);
        return;
    }
    if (panels) {
        panels_product("recurrent", 1, b1 - b0, w.FH, 0, H, h_prev + b0 * H, H, panels, H,
                       beta != 0.0f, G_t + b0 * w.GH, w.GH);
        if (w.SH)
            panels_product("recurrent, split blocks", 1, b1 - b0, w.SH, 0, H, h_prev + b0 * H, H,
                           panels + panel_count(w.FH, H), H, 0, R_t + b0 * w.SH, w.SH);
        return;
    }
    gemm_block("recurrent", 0, 1, b1 - b0, w.FH, H, 1.0f, h_prev + b0 * H, H, W_hh, H, beta,
               G_t + b0 * w.GH, w.GH);
    if (w.SH)
        gemm_block("recurrent, split blocks", 0, 1, b1 - b0, w.SH, H, 1.0f, h_prev + b0 * H, H,
                   W_hh + w.FH * H, H, 0.0f, R_t + b0 * w.SH, w.SH);
}

/* dh_rec[b0:b1] += dG_t[:, :FH] W_hh[:FH] + dR_t W_hh[FH:]: the gradient
 * reaching h_{t-1} through W_hh. */
static void recurrent_product_backward(size_t b0, size_t b1, gate_widths w, const float *dG_t,
                                       const float *dR_t, const float *W_hh,
                                       const float *panels, const bf16_recurrent *bf,
                                       float *dh_rec) {
    size_t H = w.H;
    if (bf) {
        bf16_recurrent_product("recurrent backward", &bf->weights, 0, H, b0, b1, dG_t, w.GH, 0,
                               bf, 1, dh_rec, H);
        if (w.SH)
            bf16_recurrent_product("recurrent backward, split blocks", &bf->split, 0, H, b0, b1,
                                   dR_t, w.SH, 0, bf, 1, dh_rec, H);
        return;
    }
    if (panels) {
        panels_product("recurrent backward", 0, b1 - b0, H, 0, w.FH, dG_t + b0 * w.GH, w.GH,
                       panels, w.GH, 1, dh_rec + b0 * H, H);
        if (w.SH)
            panels_product("recurrent backward, split blocks", 0, b1 - b0, H, w.FH, w.SH,
                           dR_t + b0 * w.SH, w.SH, panels, w.GH, 1, dh_rec + b0 * H, H);
        return;
    }
    gemm_block("recurrent backward", 0, 0, b1 - b0, H, w.FH, 1.0f, dG_t + b0 * w.GH, w.GH, W_hh,
               H, 1.0f, dh_rec + b0 * H, H);
    if (w.SH)
        gemm_block("recurrent backward, split blocks", 0, 0, b1 - b0, H, w.SH, 1.0f,
                   dR_t + b0 * w.SH, w.SH, W_hh + w.FH * H, H, 1.0f, dh_rec + b0 * H, H);
}

/* One layer's tensors as the recurrence sees them. */
typedef struct {
    const float *W_hh, *b_split;
    float *G, *h, *c, *aux, *mask, *y;
    float *panels;       /* room for W_hh packed (NULL where BLAS runs the products) */
    uint16_t *bf16_room; /* room for W_hh packed in bf16 (NULL: fp32 products) */
} layer_tensors;

static layer_tensors layer_of(const products *pr, const param_tensors *p,
                              const activation_tensors *a, size_t l, gate_widths w) {
    layer_tensors t = {p->weight_hh[l], p->bias_hh[l] + w.FH, a->gates[l], a->h[l], a->c[l],
                       a->aux[l], a->mask[l], a->y[l], a->panels, pr->bf16_room};
    return t;
}

/* Packs a layer's W_hh for its recurrent products (forward or backward):
 * into *bf in bf16 (returning bf), or into the fp32 panels (*panels, NULL
 * where BLAS makes them from W_hh); returns NULL in fp32. */
static const bf16_recurrent *pack_layer(gate_widths w, const layer_tensors *x, int backward,
                                        bf16_recurrent *bf, const float **panels) {
    *panels = NULL;
    if (x->bf16_room) {
        pack_recurrent_bf16(w, x->W_hh, x->bf16_room, backward, bf);
        return bf;
    }
    *panels = pack_recurrent(w, x->W_hh, x->panels, backward);
    return NULL;
}

/* tokens: the batch's inputs for layer 0 (the input term is a row of the
 * table in embed), NULL above it (the input term is in G already and
 * embed's first row holds the biases). rec: [B, SH] scratch for the split
 * products. Each step's h goes through dropout into y. */
static void recurrence_forward(const cell_kind *cell, size_t B, size_t T, gate_widths w,
                               const int32_t *tokens, const float *embed, float *rec,
                               const dropout_params *drop, const layer_tensors *x) {
    size_t H = w.H, BH = B * H;
    float beta = tokens ? 0.0f : 1.0f;
    bf16_recurrent bf_room;
    const float *panels;
    const bf16_recurrent *bf = pack_layer(w, x, 0, &bf_room, &panels);
    int blocks = work_blocks();
#pragma omp parallel
    FOR_EACH_OWN_BLOCK(block, blocks) {
        size_t b0, b1;
        thread_range(B, block, blocks, 1, &b0, &b1);
        for (size_t t = 0; t < T && b1 > b0; t++) {
            float *G_t = x->G + t * B * w.GH;
            recurrent_product(b0, b1, w, x->h + t * BH, x->W_hh, panels, bf, beta, G_t, rec);
            cell_forward_args args = {
                .H = H, .u0 = 0, .u1 = H, .b0 = b0, .b1 = b1,
                .G = G_t, .R = rec, .x_rows = embed,
                .tokens = tokens ? tokens + t : NULL, .token_stride = T,
                .b_split = x->b_split,
                .h_prev = x->h + t * BH, .c_prev = x->c ? x->c + t * BH : NULL,
                .h = x->h + (t + 1) * BH, .c = x->c ? x->c + (t + 1) * BH : NULL,
                .aux = x->aux ? x->aux + t * BH : NULL,
            };
            cell->forward(&args);
            dropout_forward(drop, t, b0, b1, H, x->h + (t + 1) * BH, x->mask + t * BH,
                            x->y + t * BH);
        }
    }
}

/* Back through the T steps. dy [N, H] is the gradient arriving at each y_t
 * from above; writes dG [N, GH] and dR [N, SH]. dh_rec and dc_next [B, H]
 * are scratch. */
static void recurrence_backward(const cell_kind *cell, size_t B, size_t T, gate_widths w,
                                const layer_tensors *x, const float *dy, float *dG, float *dR,
                                float *dh_rec, float *dc_next) {
    size_t H = w.H, BH = B * H;
    bf16_recurrent bf_room;
    const float *panels;
    const bf16_recurrent *bf = pack_layer(w, x, 1, &bf_room, &panels);
    int blocks = work_blocks();
#pragma omp parallel
    FOR_EACH_OWN_BLOCK(block, blocks) {
        size_t b0, b1;
        thread_range(B, block, blocks, 1, &b0, &b1);
        if (b1 > b0) {
            memset(dh_rec + b0 * H, 0, (b1 - b0) * H * sizeof(float));
            if (dc_next) memset(dc_next + b0 * H, 0, (b1 - b0) * H * sizeof(float));
        }
        for (size_t t = T; t-- > 0 && b1 > b0;) {
            float *dG_t = dG + t * B * w.GH, *dR_t = dR ? dR + t * B * w.SH : NULL;
            cell_backward_args args = {
                .H = H, .b0 = b0, .b1 = b1,
                .G = x->G + t * B * w.GH, .aux = x->aux ? x->aux + t * BH : NULL,
                .h_prev = x->h + t * BH, .c_prev = x->c ? x->c + t * BH : NULL,
                .h = x->h + (t + 1) * BH,
                .dy = dy + t * BH, .mask = x->mask + t * BH,
                .dh_rec = dh_rec, .dc_next = dc_next, .dG = dG_t, .dR = dR_t,
            };
            cell->backward(&args);
            if (t > 0)
                recurrent_product_backward(b0, b1, w, dG_t, dR_t, x->W_hh, panels, bf, dh_rec);
        }
    }
}

/* ========================================================================
 * Output layer: logits = Y W_fc^T + b, softmax, mean cross-entropy.
 * ======================================================================== */

/* Softmax of rows [r0, r1) of the logits in place; returns their summed
 * cross-entropy. */
CHARRNN_VECTOR_CLONES static double softmax_rows(size_t r0, size_t r1, size_t B, size_t T,
                                                 size_t V, const int32_t *targets,
                                                 float *probs) {
    double total = 0.0;
    for (size_t r = r0; r < r1; r++) {
        float *restrict p = probs + r * V;
        size_t tgt = (size_t)targets[(r % B) * T + r / B];
        float max = p[0];
        for (size_t k = 1; k < V; k++) max = p[k] > max ? p[k] : max;
        float target_logit = p[tgt], sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (size_t k = 0; k < V; k++) {
            p[k] = fast_exp(p[k] - max);
            sum += p[k];
        }
        float inv = 1.0f / sum;
#pragma omp simd
        for (size_t k = 0; k < V; k++) p[k] *= inv;
        total += (double)logf(sum) + (double)max - (double)target_logit;
    }
    return total;
}

static float output_forward(const products *pr, size_t B, size_t T, size_t H, size_t V,
                            const int32_t *targets,
                            const float *Y, const float *W_fc, const float *b_fc, float *probs) {
    size_t N = T * B;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < N; r++) memcpy(probs + r * V, b_fc, V * sizeof(float));
    product(pr, "logits", 0, 1, N, V, H, Y, H, W_fc, H, 1.0f, probs, V);
    /* One partial sum per fixed block, added in block order: the same
     * loss for any team. */
    double partial[MAX_WORK_BLOCKS];
    int blocks = work_blocks();
#pragma omp parallel
    FOR_EACH_OWN_BLOCK(block, blocks) {
        size_t r0, r1;
        thread_range(N, block, blocks, 1, &r0, &r1);
        partial[block] = softmax_rows(r0, r1, B, T, V, targets, probs);
    }
    double total = 0.0;
    for (int block = 0; block < blocks; block++) total += partial[block];
    return (float)(total / (double)N);
}

/* dlogits = (probs - onehot(target)) / N, then the fc gradients, and
 * dY = dlogits W_fc (written, not accumulated). */
static void output_backward(const products *pr, size_t B, size_t T, size_t H, size_t V,
                            const int32_t *targets,
                            const float *Y, const float *W_fc, const float *probs,
                            float *dlogits, float *dW_fc, float *db_fc, float *dY) {
    size_t N = T * B;
    float inv_n = 1.0f / (float)N;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < N; r++) {
        for (size_t k = 0; k < V; k++) dlogits[r * V + k] = probs[r * V + k] * inv_n;
        dlogits[r * V + (size_t)targets[(r % B) * T + r / B]] -= inv_n;
    }
    product(pr, "dW_fc", 1, 0, V, H, N, dlogits, V, Y, H, 1.0f, dW_fc, H);
    /* db_fc: column sums, each thread walking the rows over its columns (a
     * column at a time would touch a new cache line at every row) */
#pragma omp parallel
    {
        size_t k0, k1;
        thread_range(V, omp_get_thread_num(), omp_get_num_threads(), 16, &k0, &k1);
        add_column_sums(N, V, k0, k1, dlogits, db_fc, NULL, 0);
    }
    product(pr, "dY from logits", 0, 0, N, H, V, dlogits, V, W_fc, H, 0.0f, dY, H);
}

/* ========================================================================
 * Entry points.
 * ======================================================================== */

static charrnn_status check_batch(const charrnn_config *config, const charrnn_batch *batch) {
    if (!batch || !batch->inputs || !batch->targets) return CHARRNN_ERR_NULL_POINTER;
    charrnn_status s = check_batch_shape(batch->batch_size, batch->steps);
    if (s != CHARRNN_OK) return s;
    if (batch->total_streams != 0 &&
        (batch->total_streams < 0 || batch->first_stream < 0 ||
         (int64_t)batch->first_stream + batch->batch_size > batch->total_streams))
        return CHARRNN_ERR_INVALID_ARGUMENT;
    size_t n = (size_t)batch->batch_size * (size_t)batch->steps;
    int32_t V = config->vocab_size;
    for (size_t i = 0; i < n; i++) {
        if (batch->inputs[i] < 0 || batch->inputs[i] >= V) return CHARRNN_ERR_TOKEN_OUT_OF_RANGE;
        if (batch->targets[i] < 0 || batch->targets[i] >= V) return CHARRNN_ERR_TOKEN_OUT_OF_RANGE;
    }
    return CHARRNN_OK;
}

static charrnn_status forward(const charrnn_config *config, const float *params,
                              const charrnn_batch *batch, float keep_prob, uint64_t dropout_seed,
                              const float *state_in, float *state_out, float *activations,
                              float *loss, int bf16) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!params || !activations || !loss) return CHARRNN_ERR_NULL_POINTER;
    if ((s = check_batch(config, batch)) != CHARRNN_OK) return s;
    if (!(keep_prob > 0.0f && keep_prob <= 1.0f)) return CHARRNN_ERR_INVALID_ARGUMENT;

    threads_wait_passively();
    const cell_kind *cell = cell_of(config);
    size_t B = (size_t)batch->batch_size, T = (size_t)batch->steps;
    size_t H = (size_t)config->hidden_size, V = (size_t)config->vocab_size;
    size_t L = (size_t)config->num_layers, BH = B * H, C = (size_t)cell->states;
    gate_widths w = widths_of(cell, H);
    param_tensors p;
    activation_tensors a;
    carve_params(config, (float *)params, &p);
    carve_activations(config, B, T, bf16, activations, &a);
    products pr = {a.bf16_room};

    float_mode mode = flush_denormals_begin();
    /* state [C, L, B, H]: tensor 0 is h, tensor 1 (LSTM) is c */
    for (size_t l = 0; l < L; l++)
        for (size_t k = 0; k < C; k++) {
            float *slot0 = k == 0 ? a.h[l] : a.c[l];
            if (state_in) memcpy(slot0, state_in + (k * L + l) * BH, BH * sizeof(float));
            else memset(slot0, 0, BH * sizeof(float));
        }
    for (size_t l = 0; l < L; l++) {
        input_projection_forward(&pr, B, T, w, V, (int)l, p.weight_ih[l], p.bias_ih[l], p.bias_hh[l],
                                 l > 0 ? a.y[l - 1] : NULL, a.embed, a.gates[l]);
        dropout_params drop = dropout_setup(batch, H, (int)l, keep_prob, dropout_seed);
        layer_tensors x = layer_of(&pr, &p, &a, l, w);
        recurrence_forward(cell, B, T, w, l == 0 ? batch->inputs : NULL, a.embed, a.rec, &drop, &x);
    }
    *loss = output_forward(&pr, B, T, H, V, batch->targets, a.y[L - 1], p.fc_weight, p.fc_bias,
                           a.probs);
    if (state_out) {
        /* state_out may alias state_in: it was copied in above. */
        for (size_t l = 0; l < L; l++)
            for (size_t k = 0; k < C; k++)
                memcpy(state_out + (k * L + l) * BH, (k == 0 ? a.h[l] : a.c[l]) + T * BH,
                       BH * sizeof(float));
    }
    flush_denormals_end(mode);
    return CHARRNN_OK;
}

charrnn_status charrnn_forward(const charrnn_config *config, const float *params,
                               const charrnn_batch *batch, float keep_prob,
                               uint64_t dropout_seed, const float *state_in,
                               float *state_out, float *activations, float *loss) {
    return forward(config, params, batch, keep_prob, dropout_seed, state_in, state_out,
                   activations, loss, 0);
}

charrnn_status charrnn_forward_bf16(const charrnn_config *config, const float *params,
                                    const charrnn_batch *batch, float keep_prob,
                                    uint64_t dropout_seed, const float *state_in,
                                    float *state_out, float *activations, float *loss) {
    return forward(config, params, batch, keep_prob, dropout_seed, state_in, state_out,
                   activations, loss, 1);
}

static charrnn_status backward(const charrnn_config *config, const float *params,
                               const charrnn_batch *batch, float *activations, float *grads,
                               int bf16) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!params || !activations || !grads) return CHARRNN_ERR_NULL_POINTER;
    if ((s = check_batch(config, batch)) != CHARRNN_OK) return s;

    threads_wait_passively();
    const cell_kind *cell = cell_of(config);
    size_t B = (size_t)batch->batch_size, T = (size_t)batch->steps, N = T * B;
    size_t H = (size_t)config->hidden_size, V = (size_t)config->vocab_size;
    size_t L = (size_t)config->num_layers;
    gate_widths w = widths_of(cell, H);
    param_tensors p, g;
    activation_tensors a;
    carve_params(config, (float *)params, &p);
    carve_params(config, grads, &g);
    carve_activations(config, B, T, bf16, activations, &a);
    products pr = {a.bf16_room};

    float_mode mode = flush_denormals_begin();
    output_backward(&pr, B, T, H, V, batch->targets, a.y[L - 1], p.fc_weight, a.probs, a.dlogits,
                    g.fc_weight, g.fc_bias, a.dy);
    for (size_t l = L; l-- > 0;) {
        /* dy: the gradient at the layer's output y; the cell's kernel
         * applies the dropout mask as it reads it */
        layer_tensors x = layer_of(&pr, &p, &a, l, w);
        recurrence_backward(cell, B, T, w, &x, a.dy, a.dgates, a.dsplit, a.dh_rec, a.dc_next);
        /* dW_hh += sum_t dG_t^T h_{t-1}: h slots 0..T-1 are one [N, H] matrix;
         * the split blocks' rows from dR, with their b_hh */
        product(&pr, "dW_hh", 1, 0, w.FH, H, N, a.dgates, w.GH, a.h[l], H, 1.0f, g.weight_hh[l],
                H);
        if (w.SH) {
            product(&pr, "dW_hh, split blocks", 1, 0, w.SH, H, N, a.dsplit, w.SH, a.h[l], H, 1.0f,
                    g.weight_hh[l] + w.FH * H, H);
            split_bias_backward(N, w.SH, a.dsplit, g.bias_hh[l] + w.FH);
        }
        input_projection_backward(&pr, B, T, w, V, (int)l, batch->inputs, a.dgates,
                                  l > 0 ? a.y[l - 1] : NULL, a.embed, g.weight_ih[l],
                                  g.bias_ih[l], g.bias_hh[l]);
        if (l > 0) /* the gradient reaching the layer below's output */
            product(&pr, "dY from gates", 0, 0, N, H, w.GH, a.dgates, w.GH, p.weight_ih[l], H,
                    0.0f, a.dy, H);
    }
    flush_denormals_end(mode);
    return CHARRNN_OK;
}

charrnn_status charrnn_backward(const charrnn_config *config, const float *params,
                                const charrnn_batch *batch, float *activations,
                                float *grads) {
    return backward(config, params, batch, activations, grads, 0);
}

charrnn_status charrnn_backward_bf16(const charrnn_config *config, const float *params,
                                     const charrnn_batch *batch, float *activations,
                                     float *grads) {
    return backward(config, params, batch, activations, grads, 1);
}

/* ========================================================================
 * Measurement: the products of forward + backward, nothing else.
 * Mirrors the entry points above call for call.
 * ======================================================================== */

static void recurrence_products_forward(size_t B, size_t T, gate_widths w, const float *W_hh,
                                        float *panel_room, float beta, float *G, float *rec,
                                        const float *h) {
    size_t BH = B * w.H;
    const float *panels = pack_recurrent(w, W_hh, panel_room, 0);
    int blocks = work_blocks();
#pragma omp parallel
    FOR_EACH_OWN_BLOCK(block, blocks) {
        size_t b0, b1;
        thread_range(B, block, blocks, 1, &b0, &b1);
        for (size_t t = 0; t < T && b1 > b0; t++)
            recurrent_product(b0, b1, w, h + t * BH, W_hh, panels, NULL, beta, G + t * B * w.GH,
                              rec);
    }
}

static void recurrence_products_backward(size_t B, size_t T, gate_widths w, const float *W_hh,
                                         float *panel_room, const float *dG, const float *dR,
                                         float *dh_rec) {
    const float *panels = pack_recurrent(w, W_hh, panel_room, 1);
    int blocks = work_blocks();
#pragma omp parallel
    FOR_EACH_OWN_BLOCK(block, blocks) {
        size_t b0, b1;
        thread_range(B, block, blocks, 1, &b0, &b1);
        for (size_t t = T; t-- > 1 && b1 > b0;)
            recurrent_product_backward(b0, b1, w, dG + t * B * w.GH, dR ? dR + t * B * w.SH : NULL,
                                       W_hh, panels, NULL, dh_rec);
    }
}

charrnn_status charrnn_training_products(const charrnn_config *config, const float *params,
                                         int32_t batch_size, int32_t steps, float *activations,
                                         float *grads) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!params || !activations || !grads) return CHARRNN_ERR_NULL_POINTER;
    if ((s = check_batch_shape(batch_size, steps)) != CHARRNN_OK) return s;
    threads_wait_passively();
    size_t B = (size_t)batch_size, T = (size_t)steps, N = T * B;
    size_t H = (size_t)config->hidden_size, V = (size_t)config->vocab_size;
    size_t L = (size_t)config->num_layers;
    gate_widths w = widths_of(cell_of(config), H);
    param_tensors p, g;
    activation_tensors a;
    carve_params(config, (float *)params, &p);
    carve_params(config, grads, &g);
    carve_activations(config, B, T, 0, activations, &a);
    float_mode mode = flush_denormals_begin(); /* as the step runs */
    for (size_t l = 0; l < L; l++) {
        if (l > 0) gemm_rows_parallel("input projection", 0, 1, N, w.GH, H, 1.0f, a.y[l - 1], H, p.weight_ih[l], H, 0.0f, a.gates[l], w.GH);
        recurrence_products_forward(B, T, w, p.weight_hh[l], a.panels, l > 0 ? 1.0f : 0.0f, a.gates[l], a.rec, a.h[l]);
    }
    gemm_rows_parallel("logits", 0, 1, N, V, H, 1.0f, a.y[L - 1], H, p.fc_weight, H, 1.0f, a.probs, V);
    gemm_rows_parallel("dW_fc", 1, 0, V, H, N, 1.0f, a.dlogits, V, a.y[L - 1], H, 1.0f, g.fc_weight, H);
    gemm_rows_parallel("dY from logits", 0, 0, N, H, V, 1.0f, a.dlogits, V, p.fc_weight, H, 0.0f, a.dy, H);
    for (size_t l = L; l-- > 0;) {
        recurrence_products_backward(B, T, w, p.weight_hh[l], a.panels, a.dgates, a.dsplit, a.dh_rec);
        gemm_rows_parallel("dW_hh", 1, 0, w.FH, H, N, 1.0f, a.dgates, w.GH, a.h[l], H, 1.0f, g.weight_hh[l], H);
        if (w.SH)
            gemm_rows_parallel("dW_hh, split blocks", 1, 0, w.SH, H, N, 1.0f, a.dsplit, w.SH, a.h[l], H, 1.0f, g.weight_hh[l] + w.FH * H, H);
        if (l > 0) {
            gemm_rows_parallel("dW_ih", 1, 0, w.GH, H, N, 1.0f, a.dgates, w.GH, a.y[l - 1], H, 1.0f, g.weight_ih[l], H);
            gemm_rows_parallel("dY from gates", 0, 0, N, H, w.GH, 1.0f, a.dgates, w.GH, p.weight_ih[l], H, 0.0f, a.dy, H);
        }
    }
    flush_denormals_end(mode);
    return CHARRNN_OK;
}

charrnn_status charrnn_set_compute_threads(int32_t threads) {
#ifdef _OPENMP
    if (threads < 1) return CHARRNN_ERR_INVALID_ARGUMENT;
    omp_set_num_threads(threads);
#else
    if (threads != 1) return CHARRNN_ERR_INVALID_ARGUMENT; /* built without OpenMP: one thread */
#endif
    return CHARRNN_OK;
}
