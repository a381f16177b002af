/*
 * bfloat16 products: for inference (charrnn_step_bf16, charrnn_prime_bf16)
 * and for training (charrnn_forward_bf16, charrnn_backward_bf16).
 *
 * Sampling one stream, and feeding a prime, read every weight once per
 * character: their speed is the speed of reading W_hh. Packed once into
 * bfloat16 the weights are half the bytes, and CPUs with AVX512_BF16
 * multiply them (vdpbf16ps) at twice the fp32 rate. Only the products
 * change: the inputs of a product are rounded to bf16 as it is made, the
 * sums are fp32, and the state, biases, gates and logits stay fp32.
 *
 * The packed layout is the one vdpbf16ps reads: a matrix [R, K] becomes
 * blocks of 16 rows; in a block, for each pair of columns (2p, 2p + 1),
 * 32 values: row i's two at 2i and 2i + 1. A zero pads the last block's
 * rows and an odd K's last pair, so every pair is whole.
 *
 * The arithmetic of one row r and one input x, whichever kernel runs it:
 *   acc = +0
 *   for each pair p:  acc += W[r, 2p+1] x[2p+1];  acc += W[r, 2p] x[2p]
 *   out += acc
 * each += a fused multiply-add rounded to nearest even whose subnormal
 * result becomes zero, as the SDM defines VDPBF16PS. A product of two
 * bf16 values is exact in fp32, so the portable kernel (fmaf, then the
 * flush) gives the same bits as the instruction: the tests hold the two to
 * it where the CPU has one, and use the portable kernel everywhere else.
 * A row's result depends on nothing but the row and x, so how rows and
 * inputs are grouped into calls (threads, streams, a prime's cut) never
 * changes a bit.
 *
 * Training makes every product this way too, C (+)= op(A) op(B): op(B) is
 * packed as the weights are (each pass's own copy, from whatever it is:
 * a weight, its transpose, or an activation's transpose for a weight
 * gradient), op(A)'s rows are rounded to bf16 rows, and the kernel adds
 * each sum into C. The room both take is the caller's (the activation
 * block's bf16 region), so nothing is allocated in the passes.
 */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#define CHARRNN_HAS_AVX512_BF16_KERNEL 1
#endif

/* ---- rounding ---- */

/* The rounding, on a float's bits: the bf16 value in the high 16 bits.
 * Written without branches, as selects, so that the loops below that
 * call it compile to vector code. */
static inline uint32_t bf16_round_bits(uint32_t u) {
    uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u); /* to nearest, ties to even (overflow rounds to inf) */
    uint32_t quiet = u | 0x00400000u;                  /* NaN stays NaN */
    uint32_t zero = u & 0x80000000u;                   /* zero, subnormal: a signed zero */
    uint32_t finite = (u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded;
    return (u & 0x7f800000u) == 0 ? zero : finite;
}

static inline uint32_t float_bits(float value) {
    uint32_t u;
    memcpy(&u, &value, sizeof u);
    return u;
}

/* Two floats rounded into one packed pair: the first in the low half, as
 * the layout below stores column 2p before 2p + 1. */
static inline uint32_t bf16_pair(float even, float odd) {
    return (bf16_round_bits(float_bits(even)) >> 16) | (bf16_round_bits(float_bits(odd)) & 0xffff0000u);
}

uint16_t bf16_from_float(float value) { return (uint16_t)(bf16_round_bits(float_bits(value)) >> 16); }

static inline float float_from_bf16(uint16_t value) {
    uint32_t u = (uint32_t)value << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

CHARRNN_VECTOR_CLONES void bf16_round_row(const float *x, size_t count, uint16_t *out) {
#pragma omp simd
    for (size_t k = 0; k < count; k++) out[k] = (uint16_t)(bf16_round_bits(float_bits(x[k])) >> 16);
}

/* ---- the packed block: each layer's W_ih (above layer 0; layer 0's is a
 * lookup, never a product) and W_hh, then fc.weight; written once here ---- */

static size_t packed_count(size_t rows, size_t cols) {
    return (rows + 15) / 16 * ((cols + 1) / 2) * 32;
}

size_t carve_bf16_weights(const charrnn_config *config, const uint16_t *block, bf16_weights *out) {
    size_t H = (size_t)config->hidden_size, V = (size_t)config->vocab_size;
    size_t GH = (size_t)cell_of(config)->gates * H, off = 0;
    bf16_weights unused;
    if (!out) out = &unused;
    memset(out, 0, sizeof *out);
    bf16_matrix *slots[2 * CHARRNN_MAX_LAYERS + 1];
    size_t rows[2 * CHARRNN_MAX_LAYERS + 1], n = 0;
    for (int l = 0; l < config->num_layers; l++) {
        if (l > 0) slots[n] = &out->weight_ih[l], rows[n++] = GH;
        slots[n] = &out->weight_hh[l], rows[n++] = GH;
    }
    slots[n] = &out->fc_weight, rows[n++] = V;
    for (size_t i = 0; i < n; i++) {
        bf16_matrix *m = slots[i];
        m->data = block ? block + off : NULL;
        m->rows = rows[i];
        m->cols = H;
        m->pairs = (H + 1) / 2;
        off += packed_count(rows[i], H);
    }
    return off;
}

/* Stores a packed pair at element `index` of a uint16_t array (its half-word `2 * index`). */
static inline void store_pair(uint16_t *out, size_t index, uint32_t pair) { memcpy(out + 2 * index, &pair, sizeof pair); }

/* One block-row of a transposed pack, or one m-range of a transposed
 * rounding: out's pair at `index + i * stride` from column i of two rows
 * (odd NULL: an odd K's last pair, padded with a zero). */
static inline void pairs_of_rows(const float *even, const float *odd, size_t count, uint16_t *out,
                                 size_t index, size_t stride) {
    if (odd) {
#pragma omp simd
        for (size_t i = 0; i < count; i++) store_pair(out, index + i * stride, bf16_pair(even[i], odd[i]));
    } else {
#pragma omp simd
        for (size_t i = 0; i < count; i++) store_pair(out, index + i * stride, bf16_pair(even[i], 0.0f));
    }
}

/* Blocks [b0, b1) of op(W) [R, K] packed: op(W)[r, k] is W[r * ld + k],
 * or W[k * ld + r] when trans. The loops follow W's memory: with trans,
 * each pair of W's rows is read along its length across every block (a
 * block alone would walk down W a line per row, a stride the prefetchers
 * do not follow); without, each row of op(W) is read along its length. */
CHARRNN_VECTOR_CLONES static void pack_blocks(int trans, const float *W, size_t ld, size_t R, size_t K,
                                              size_t b0, size_t b1, uint16_t *out) {
    size_t pairs = (K + 1) / 2, r_end = b1 * 16 < R ? b1 * 16 : R;
    /* pair element (b, p, i), row b·16 + i's pair p, is at (b·pairs + p)·16 + i */
    for (size_t r = r_end; r < b1 * 16; r++) /* the pad of a last block's rows */
        for (size_t p = 0; p < pairs; p++) store_pair(out, ((r / 16) * pairs + p) * 16 + r % 16, 0);
    if (trans) {
        for (size_t p = 0; p < pairs; p++) {
            const float *even = W + 2 * p * ld, *odd = 2 * p + 1 < K ? even + ld : NULL;
            for (size_t b = b0; b < b1; b++) {
                size_t first = b * 16, end = first + 16 < r_end ? first + 16 : r_end;
                if (end > first)
                    pairs_of_rows(even + first, odd ? odd + first : NULL, end - first, out,
                                  (b * pairs + p) * 16, 1);
            }
        }
        return;
    }
    for (size_t r = b0 * 16; r < r_end; r++) {
        const float *row = W + r * ld;
        size_t index = (r / 16) * pairs * 16 + r % 16;
        for (size_t p = 0; p < K / 2; p++) store_pair(out, index + p * 16, bf16_pair(row[2 * p], row[2 * p + 1]));
        if (K % 2) store_pair(out, index + (pairs - 1) * 16, bf16_pair(row[K - 1], 0.0f));
    }
}

static void pack_matrix(const float *W, size_t R, size_t K, uint16_t *out) {
    pack_blocks(0, W, K, R, K, 0, (R + 15) / 16, out);
}

charrnn_status charrnn_bf16_weights_count(const charrnn_config *config, size_t *count) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!count) return CHARRNN_ERR_NULL_POINTER;
    *count = carve_bf16_weights(config, NULL, NULL);
    return CHARRNN_OK;
}

charrnn_status charrnn_bf16_pack(const charrnn_config *config, const float *params, uint16_t *weights) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!params || !weights) return CHARRNN_ERR_NULL_POINTER;
    param_tensors p;
    bf16_weights packed;
    carve_params(config, (float *)params, &p);
    carve_bf16_weights(config, weights, &packed);
    size_t H = (size_t)config->hidden_size;
    for (int l = 0; l < config->num_layers; l++) {
        if (l > 0) pack_matrix(p.weight_ih[l], packed.weight_ih[l].rows, H, (uint16_t *)packed.weight_ih[l].data);
        pack_matrix(p.weight_hh[l], packed.weight_hh[l].rows, H, (uint16_t *)packed.weight_hh[l].data);
    }
    pack_matrix(p.fc_weight, packed.fc_weight.rows, H, (uint16_t *)packed.fc_weight.data);
    return CHARRNN_OK;
}

/* ---- the products of training ---- */

size_t bf16_packed_count(size_t R, size_t K) { return packed_count(R, K); }

size_t bf16_product_room(size_t M, size_t N, size_t K) {
    return packed_count(N, K) + M * 2 * ((K + 1) / 2);
}

void bf16_pack_parallel(int trans, const float *W, size_t ld, size_t R, size_t K,
                        uint16_t *out, bf16_matrix *packed) {
    size_t blocks = (R + 15) / 16;
    /* Packing is exact, so the split across the team changes nothing. */
#pragma omp parallel if (R * K > 65536)
    {
        size_t b0, b1;
        thread_range(blocks, omp_get_thread_num(), omp_get_num_threads(), 1, &b0, &b1);
        pack_blocks(trans, W, ld, R, K, b0, b1, out);
    }
    packed->data = out;
    packed->rows = R;
    packed->cols = K;
    packed->pairs = (K + 1) / 2;
}

CHARRNN_VECTOR_CLONES void bf16_round_rows(int trans, const float *A, size_t lda, size_t m0, size_t m1,
                                           size_t K, uint16_t *out, size_t ldo) {
    if (!trans) {
        for (size_t m = m0; m < m1; m++) {
            bf16_round_row(A + m * lda, K, out + m * ldo);
            if (K % 2) out[m * ldo + K] = 0;
        }
        return;
    }
    /* op(A)[m, k] = A[k * lda + m]: two rows of A at a time, read along
     * their length, each m's pair stored whole (ldo is even) */
    for (size_t k = 0; k < K; k += 2) {
        const float *even = A + k * lda + m0;
        pairs_of_rows(even, k + 1 < K ? even + lda : NULL, m1 - m0, out, (m0 * ldo + k) / 2, ldo / 2);
    }
}

void bf16_product_rows_parallel(const char *name, int trans_a, int trans_b, size_t M, size_t N,
                                size_t K, const float *A, size_t lda, const float *B, size_t ldb,
                                float beta, float *C, size_t ldc, uint16_t *room) {
    if (M == 0 || N == 0) return;
    bf16_matrix W;
    uint16_t *rows = room + packed_count(N, K);
    size_t ldx = 2 * ((K + 1) / 2);
    bf16_pack_parallel(!trans_b, B, ldb, N, K, room, &W);
    /* A row's sums depend on nothing but its row and op(B), so the rows
     * may be split any way: the fixed blocks as the fp32 products. */
    int blocks = work_blocks();
#pragma omp parallel if (M * N * K > 500000 && M >= 32)
    FOR_EACH_OWN_BLOCK(block, blocks) {
        size_t begin, end;
        thread_range(M, block, blocks, 16, &begin, &end);
        if (end > begin) {
            double start = products_logged() ? product_clock() : -1.0;
            bf16_round_rows(trans_a, A, lda, begin, end, K, rows, ldx);
            if (beta == 0.0f)
                for (size_t m = begin; m < end; m++) memset(C + m * ldc, 0, N * sizeof(float));
            bf16_rows_times(&W, 0, N, end - begin, rows + begin * ldx, ldx, C + begin * ldc, ldc);
            if (start >= 0.0)
                record_product(name, trans_a, trans_b, end - begin, N, K, C + begin * ldc,
                               product_clock() - start);
        }
    }
}

/* ---- the kernels ---- */

/* Adds acc's lanes for the rows of block `block` that lie in [row0, row0 + rows). */
static inline void add_block_lanes(const float *acc, size_t block, size_t row0, size_t rows, float *out) {
    size_t first = block * 16 > row0 ? block * 16 : row0;
    size_t end = block * 16 + 16 < row0 + rows ? block * 16 + 16 : row0 + rows;
    for (size_t r = first; r < end; r++) out[r - row0] += acc[r - block * 16];
}

static inline float flush_subnormal(float v) { return fabsf(v) < FLT_MIN ? copysignf(0.0f, v) : v; }

/* The portable kernel: the header's arithmetic for one block of 16 rows
 * and up to 4 inputs, the 16 rows' sums side by side so that they fill
 * vector registers (and, where the clones give the CPU's FMA, fmaf is one
 * instruction instead of a libm call). Each sum's operations and their
 * order are the header's, so are its bits. */
CHARRNN_VECTOR_CLONES static void block_times_portable(const uint16_t *w, size_t P, const uint16_t *x,
                                                       size_t ldx, size_t inputs, float acc[4][16]) {
    for (size_t s = 0; s < 4; s++)
        for (size_t i = 0; i < 16; i++) acc[s][i] = 0.0f;
    for (size_t p = 0; p < P; p++) {
        float odd[16], even[16];
        for (size_t i = 0; i < 16; i++) {
            odd[i] = float_from_bf16(w[p * 32 + 2 * i + 1]);
            even[i] = float_from_bf16(w[p * 32 + 2 * i]);
        }
        for (size_t s = 0; s < inputs; s++) {
            float x1 = float_from_bf16(x[s * ldx + 2 * p + 1]), x0 = float_from_bf16(x[s * ldx + 2 * p]);
            float *a = acc[s];
#pragma omp simd
            for (size_t i = 0; i < 16; i++)
                a[i] = flush_subnormal(fmaf(even[i], x0, flush_subnormal(fmaf(odd[i], x1, a[i]))));
        }
    }
}

static void rows_times_portable(const bf16_matrix *W, size_t row0, size_t rows, size_t S,
                                const uint16_t *x, size_t ldx, float *out, size_t ldo) {
    size_t P = W->pairs, b0 = row0 / 16, b1 = (row0 + rows + 15) / 16;
    float acc[4][16];
    for (size_t b = b0; b < b1; b++)
        for (size_t s = 0; s < S; s += 4) {
            size_t inputs = S - s < 4 ? S - s : 4;
            block_times_portable(W->data + b * P * 32, P, x + s * ldx, ldx, inputs, acc);
            for (size_t j = 0; j < inputs; j++) add_block_lanes(acc[j], b, row0, rows, out + (s + j) * ldo);
        }
}

#ifdef CHARRNN_HAS_AVX512_BF16_KERNEL
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* A tile of up to 4 blocks of rows (64 rows) by `ns` inputs: 4 * ns
 * independent sums, so the instruction's latency is hidden even for one
 * input, and each 64-byte load of W serves every input of the tile. */
static inline __attribute__((always_inline)) BF16_TARGET void
tile_avx512(const uint16_t *const w[4], size_t P, const uint16_t *x, size_t ldx, int ns,
            __m512 acc[4][4]) {
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = _mm512_setzero_ps();
    for (size_t p = 0; p < P; p++) {
        __m512bh wv[4];
        for (int i = 0; i < 4; i++) wv[i] = (__m512bh)_mm512_loadu_si512(w[i] + p * 32);
        for (int j = 0; j < ns; j++) {
            uint32_t pair;
            memcpy(&pair, x + (size_t)j * ldx + 2 * p, sizeof pair);
            __m512bh xv = (__m512bh)_mm512_set1_epi32((int)pair);
            for (int i = 0; i < 4; i++) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], wv[i], xv);
        }
    }
}

/* add_block_lanes for a vector of sums: one vector add when the whole block
 * lies in the rows asked for (the same fp32 additions). */
BF16_TARGET static inline void add_block_avx512(__m512 acc, size_t block, size_t row0, size_t rows, float *out) {
    if (block * 16 >= row0 && block * 16 + 16 <= row0 + rows) {
        float *o = out + block * 16 - row0;
        _mm512_storeu_ps(o, _mm512_add_ps(_mm512_loadu_ps(o), acc));
        return;
    }
    float lanes[16];
    _mm512_storeu_ps(lanes, acc);
    add_block_lanes(lanes, block, row0, rows, out);
}

/* One input: 8 blocks (128 rows) at once, 8 independent sums. */
BF16_TARGET static void one_input_avx512(const bf16_matrix *W, size_t row0, size_t rows,
                                         const uint16_t *x, float *out) {
    size_t P = W->pairs, b0 = row0 / 16, b1 = (row0 + rows + 15) / 16;
    for (size_t b = b0; b < b1; b += 8) {
        size_t nb = b1 - b < 8 ? b1 - b : 8;
        const uint16_t *w[8];
        for (size_t i = 0; i < 8; i++) w[i] = W->data + (b + (i < nb ? i : nb - 1)) * P * 32;
        __m512 acc[8];
        for (int i = 0; i < 8; i++) acc[i] = _mm512_setzero_ps();
        for (size_t p = 0; p < P; p++) {
            uint32_t pair;
            memcpy(&pair, x + 2 * p, sizeof pair);
            __m512bh xv = (__m512bh)_mm512_set1_epi32((int)pair);
            for (int i = 0; i < 8; i++)
                acc[i] = _mm512_dpbf16_ps(acc[i], (__m512bh)_mm512_loadu_si512(w[i] + p * 32), xv);
        }
        for (size_t i = 0; i < nb; i++) add_block_avx512(acc[i], b + i, row0, rows, out);
    }
}

BF16_TARGET static void rows_times_avx512(const bf16_matrix *W, size_t row0, size_t rows, size_t S,
                                          const uint16_t *x, size_t ldx, float *out, size_t ldo) {
    if (S == 1) {
        one_input_avx512(W, row0, rows, x, out);
        return;
    }
    size_t P = W->pairs, b0 = row0 / 16, b1 = (row0 + rows + 15) / 16;
    for (size_t b = b0; b < b1; b += 4) {
        size_t nb = b1 - b < 4 ? b1 - b : 4;
        const uint16_t *w[4];
        for (size_t i = 0; i < 4; i++) w[i] = W->data + (b + (i < nb ? i : nb - 1)) * P * 32;
        for (size_t s = 0; s < S; s += 4) {
            int ns = S - s < 4 ? (int)(S - s) : 4;
            __m512 acc[4][4];
            const uint16_t *xs = x + s * ldx;
            switch (ns) { /* each case a tile with its count of inputs known */
            case 1: tile_avx512(w, P, xs, ldx, 1, acc); break;
            case 2: tile_avx512(w, P, xs, ldx, 2, acc); break;
            case 3: tile_avx512(w, P, xs, ldx, 3, acc); break;
            default: tile_avx512(w, P, xs, ldx, 4, acc); break;
            }
            for (int j = 0; j < ns; j++)
                for (size_t i = 0; i < nb; i++) add_block_avx512(acc[i][j], b + i, row0, rows, out + (s + (size_t)j) * ldo);
        }
    }
}
#endif

/* ---- which kernel runs: decided once, when the core is loaded ---- */

static int bf16_kernel = CHARRNN_BF16_PORTABLE;
static char bf16_kernel_reason[48] = "";

__attribute__((constructor)) static void charrnn_choose_bf16_kernel(void) {
    const char *asked = getenv("CHARRNN_BF16");
    if (asked && strcmp(asked, "portable") == 0) {
        snprintf(bf16_kernel_reason, sizeof bf16_kernel_reason, "CHARRNN_BF16=portable");
        return;
    }
#ifdef CHARRNN_HAS_AVX512_BF16_KERNEL
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl")) {
        bf16_kernel = CHARRNN_BF16_AVX512;
        return;
    }
#endif
    snprintf(bf16_kernel_reason, sizeof bf16_kernel_reason, "the CPU has no AVX512_BF16");
}

int32_t charrnn_bf16_kernel(void) { return bf16_kernel; }

void bf16_kernel_describe(char *out, size_t size) {
    if (bf16_kernel == CHARRNN_BF16_AVX512)
        snprintf(out, size, "AVX512_BF16");
    else
        snprintf(out, size, "portable (%s)", bf16_kernel_reason);
}

void bf16_rows_times(const bf16_matrix *W, size_t row0, size_t rows, size_t S, const uint16_t *x,
                     size_t ldx, float *out, size_t ldo) {
#ifdef CHARRNN_HAS_AVX512_BF16_KERNEL
    if (bf16_kernel == CHARRNN_BF16_AVX512) {
        rows_times_avx512(W, row0, rows, S, x, ldx, out, ldo);
        return;
    }
#endif
    rows_times_portable(W, row0, rows, S, x, ldx, out, ldo);
}

charrnn_status charrnn_bf16_product(int32_t kernel, int32_t rows, int32_t cols, int32_t inputs,
                                    const float *weights, const float *x, float *out) {
    if (!weights || !x || !out) return CHARRNN_ERR_NULL_POINTER;
    if (rows < 1 || cols < 1 || inputs < 1) return CHARRNN_ERR_INVALID_SHAPE;
    if (kernel != CHARRNN_BF16_PORTABLE && kernel != CHARRNN_BF16_AVX512) return CHARRNN_ERR_INVALID_ARGUMENT;
#ifdef CHARRNN_HAS_AVX512_BF16_KERNEL
    if (kernel == CHARRNN_BF16_AVX512 && bf16_kernel != CHARRNN_BF16_AVX512) return CHARRNN_ERR_INVALID_ARGUMENT;
#else
    if (kernel == CHARRNN_BF16_AVX512) return CHARRNN_ERR_INVALID_ARGUMENT;
#endif
    size_t R = (size_t)rows, K = (size_t)cols, S = (size_t)inputs, pairs = (K + 1) / 2;
    uint16_t *packed = malloc(packed_count(R, K) * sizeof *packed);
    uint16_t *xb = calloc(S * 2 * pairs, sizeof *xb);
    if (!packed || !xb) {
        free(packed);
        free(xb);
        return CHARRNN_ERR_INVALID_SHAPE;
    }
    pack_matrix(weights, R, K, packed);
    for (size_t s = 0; s < S; s++) bf16_round_row(x + s * K, K, xb + s * 2 * pairs);
    bf16_matrix W = {packed, R, K, pairs};
    memset(out, 0, S * R * sizeof *out);
#ifdef CHARRNN_HAS_AVX512_BF16_KERNEL
    if (kernel == CHARRNN_BF16_AVX512)
        rows_times_avx512(&W, 0, R, S, xb, 2 * pairs, out, R);
    else
#endif
        rows_times_portable(&W, 0, R, S, xb, 2 * pairs, out, R);
    free(packed);
    free(xb);
    return CHARRNN_OK;
}
