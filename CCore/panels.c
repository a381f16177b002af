/*
 * The recurrence's own fp32 products: C (+)= A P, with the weights P packed
 * once per pass into panels of 16 columns.
 *
 * Why not sgemm: the recurrent product is small (a thread's 50 streams
 * times W_hh), and it is made 2T times a step with the same W_hh. Every
 * sgemm call re-packs all of W_hh (4 MB at 2 x 512) for 105 MFLOP of work,
 * and the packing and the small M kept OpenBLAS at 64-70 % of the FMA
 * units' peak on these products, the largest share of a training step.
 * Packed once here, the weights are read straight from the panels by a
 * register-blocked micro-kernel.
 *
 * Layout: a panel holds 16 output columns for every k, P[k * 16 + j]; the
 * last panel's missing columns are zeros. A panel of K = 512 is 32 KB, so
 * it stays in L1/L2 while every row block of the thread's streams passes
 * over it; the next panel streams in from L3 once per product.
 *
 * The arithmetic of one element, whichever kernel runs it:
 *   acc = C[i, j] (accumulate) or +0;  for k ascending: acc = fma(A[i, k], P[k, j], acc)
 * one rounding per fused multiply-add. It depends on nothing but row i of
 * A and column j of P, so the rows' split across threads, a call's height
 * and the panel a column sits in never change a bit (training gives the
 * same bits for any team), and the portable kernel (fmaf) gives the AVX2
 * and AVX-512 kernels' bits exactly: the tests hold them together.
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#include <immintrin.h>
#define CHARRNN_HAS_AVX2_PANELS 1
#endif

enum { PANEL = 16, PANEL_ROWS = 6 };

size_t panel_count(size_t N, size_t K) { return (N + PANEL - 1) / PANEL * PANEL * K; }

/* ---- packing (the columns of C are B's rows, or B's columns) ---- */

void pack_panels(int trans_b, const float *B, size_t ldb, size_t N, size_t K, float *P) {
    size_t panels = (N + PANEL - 1) / PANEL;
#pragma omp parallel for schedule(static) if (N * K > 65536)
    for (size_t p = 0; p < panels; p++) {
        float *panel = P + p * PANEL * K;
        size_t j0 = p * PANEL, n = N - j0 < PANEL ? N - j0 : PANEL;
        for (size_t k = 0; k < K; k++) {
            float *to = panel + k * PANEL;
            for (size_t j = 0; j < PANEL; j++)
                to[j] = j >= n ? 0.0f : trans_b ? B[(j0 + j) * ldb + k] : B[k * ldb + j0 + j];
        }
    }
}

/* ---- the kernels: rows [0, rows) of C against one panel, columns [0, n) ---- */

/* The M rows go in blocks of 5 or 6 where M allows (50 rows as 6 x 5 +
 * 5 x 4, not 8 x 6 + 2): a block of 5 still has the 10 accumulators that
 * cover the FMA latency, a block of 2 would run at half speed. */
static inline size_t row_blocks(size_t M) { return (M + PANEL_ROWS - 1) / PANEL_ROWS; }
static inline size_t row_block_start(size_t M, size_t blocks, size_t b) {
    return b * (M / blocks) + (b < M % blocks ? b : M % blocks);
}

static void panel_rows_portable(size_t rows, size_t n, size_t K, const float *A, size_t lda,
                                const float *panel, int accumulate, float *C, size_t ldc) {
    float acc[PANEL_ROWS][PANEL];
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < PANEL; j++) acc[r][j] = accumulate && j < n ? C[r * ldc + j] : 0.0f;
    for (size_t k = 0; k < K; k++) {
        const float *p = panel + k * PANEL;
        for (size_t r = 0; r < rows; r++) {
            float a = A[r * lda + k];
            for (size_t j = 0; j < PANEL; j++) acc[r][j] = fmaf(a, p[j], acc[r][j]);
        }
    }
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < n; j++) C[r * ldc + j] = acc[r][j];
}

#ifdef CHARRNN_HAS_AVX2_PANELS
#define AVX2_TARGET __attribute__((target("avx2,fma")))

/* Twelve accumulators (6 rows x 2 vectors of 8) cover the FMA latency on
 * two pipes; per k, two panel loads and six broadcasts feed twelve FMAs.
 * `rows` is a constant at every call, so the loops unroll into registers. */
AVX2_TARGET static inline __attribute__((always_inline)) void
panel_rows_avx2(const size_t rows, size_t n, size_t K, const float *A, size_t lda,
                const float *panel, int accumulate, float *C, size_t ldc) {
    __m256 acc[PANEL_ROWS][2];
    float edge[PANEL_ROWS][PANEL];
    for (size_t r = 0; r < rows; r++) {
        const float *from = C + r * ldc;
        if (accumulate && n < PANEL) {
            for (size_t j = 0; j < PANEL; j++) edge[r][j] = j < n ? from[j] : 0.0f;
            from = edge[r];
        }
        acc[r][0] = accumulate ? _mm256_loadu_ps(from) : _mm256_setzero_ps();
        acc[r][1] = accumulate ? _mm256_loadu_ps(from + 8) : _mm256_setzero_ps();
    }
    for (size_t k = 0; k < K; k++) {
        __m256 b0 = _mm256_loadu_ps(panel + k * PANEL), b1 = _mm256_loadu_ps(panel + k * PANEL + 8);
        for (size_t r = 0; r < rows; r++) {
            __m256 a = _mm256_broadcast_ss(A + r * lda + k);
            acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
        }
    }
    for (size_t r = 0; r < rows; r++) {
        if (n == PANEL) {
            _mm256_storeu_ps(C + r * ldc, acc[r][0]);
            _mm256_storeu_ps(C + r * ldc + 8, acc[r][1]);
        } else {
            _mm256_storeu_ps(edge[r], acc[r][0]);
            _mm256_storeu_ps(edge[r] + 8, acc[r][1]);
            for (size_t j = 0; j < n; j++) C[r * ldc + j] = edge[r][j];
        }
    }
}

AVX2_TARGET static void panel_avx2(size_t M, size_t n, size_t K, const float *A, size_t lda,
                                   const float *panel, int accumulate, float *C, size_t ldc) {
    size_t blocks = row_blocks(M);
    for (size_t b = 0; b < blocks; b++) {
        size_t i = row_block_start(M, blocks, b), rows = row_block_start(M, blocks, b + 1) - i;
        const float *a = A + i * lda;
        float *c = C + i * ldc;
        switch (rows) {
        case 6: panel_rows_avx2(6, n, K, a, lda, panel, accumulate, c, ldc); break;
        case 5: panel_rows_avx2(5, n, K, a, lda, panel, accumulate, c, ldc); break;
        case 4: panel_rows_avx2(4, n, K, a, lda, panel, accumulate, c, ldc); break;
        case 3: panel_rows_avx2(3, n, K, a, lda, panel, accumulate, c, ldc); break;
        case 2: panel_rows_avx2(2, n, K, a, lda, panel, accumulate, c, ldc); break;
        default: panel_rows_avx2(1, n, K, a, lda, panel, accumulate, c, ldc); break;
        }
    }
}

/* The same with AVX-512: two panels side by side (32 columns), so the six
 * rows again give twelve accumulators, and per k two panel loads and six
 * broadcasts feed twelve 16-wide FMAs; a last odd panel goes alone. A
 * panel's missing columns are masked off C, as the AVX2 kernel's edge copy
 * does. Each element's chain of FMAs is the portable kernel's. */
#define AVX512_TARGET __attribute__((target("avx512f")))

AVX512_TARGET static inline __attribute__((always_inline)) void
panel_rows_avx512(const size_t rows, const int vecs, const size_t n[2], size_t K, const float *A,
                  size_t lda, const float *const panel[2], int accumulate, float *C, size_t ldc) {
    __m512 acc[PANEL_ROWS][2];
    __mmask16 mask[2];
    for (int v = 0; v < vecs; v++) mask[v] = (__mmask16)((1u << n[v]) - 1u);
    for (size_t r = 0; r < rows; r++)
        for (int v = 0; v < vecs; v++)
            acc[r][v] = accumulate ? _mm512_maskz_loadu_ps(mask[v], C + r * ldc + v * PANEL) : _mm512_setzero_ps();
    for (size_t k = 0; k < K; k++) {
        __m512 b[2];
        for (int v = 0; v < vecs; v++) b[v] = _mm512_loadu_ps(panel[v] + k * PANEL);
        for (size_t r = 0; r < rows; r++) {
            __m512 a = _mm512_set1_ps(A[r * lda + k]);
            for (int v = 0; v < vecs; v++) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
        }
    }
    for (size_t r = 0; r < rows; r++)
        for (int v = 0; v < vecs; v++) _mm512_mask_storeu_ps(C + r * ldc + v * PANEL, mask[v], acc[r][v]);
}

/* Columns [0, n[0] + n[1]) of C from one panel (vecs 1) or two (vecs 2). */
AVX512_TARGET static void panels_avx512(size_t M, const int vecs, const size_t n[2], size_t K, const float *A,
                                        size_t lda, const float *const panel[2], int accumulate, float *C,
                                        size_t ldc) {
    size_t blocks = row_blocks(M);
    for (size_t b = 0; b < blocks; b++) {
        size_t i = row_block_start(M, blocks, b), rows = row_block_start(M, blocks, b + 1) - i;
        const float *a = A + i * lda;
        float *c = C + i * ldc;
#define ROWS_AVX512(R)                                                                                   \
    (vecs == 2 ? panel_rows_avx512(R, 2, n, K, a, lda, panel, accumulate, c, ldc)                        \
               : panel_rows_avx512(R, 1, n, K, a, lda, panel, accumulate, c, ldc))
        switch (rows) {
        case 6: ROWS_AVX512(6); break;
        case 5: ROWS_AVX512(5); break;
        case 4: ROWS_AVX512(4); break;
        case 3: ROWS_AVX512(3); break;
        case 2: ROWS_AVX512(2); break;
        default: ROWS_AVX512(1); break;
        }
#undef ROWS_AVX512
    }
}
#endif

static void panel_portable(size_t M, size_t n, size_t K, const float *A, size_t lda,
                           const float *panel, int accumulate, float *C, size_t ldc) {
    size_t blocks = row_blocks(M);
    for (size_t b = 0; b < blocks; b++) {
        size_t i = row_block_start(M, blocks, b), rows = row_block_start(M, blocks, b + 1) - i;
        panel_rows_portable(rows, n, K, A + i * lda, lda, panel, accumulate, C + i * ldc, ldc);
    }
}

/* ---- which kernel runs: decided once, when the core is loaded ---- */

static int panels_kernel = CHARRNN_PANELS_BLAS;
static char panels_kernel_reason[64] = ""; /* why; empty when our kernel suits the CPU */

static void set_kernel(int kernel, const char *reason) {
    panels_kernel = kernel;
    snprintf(panels_kernel_reason, sizeof panels_kernel_reason, "%s", reason);
}

#ifdef CHARRNN_HAS_AVX2_PANELS
static int cpu_has_avx2(void) { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
#endif

__attribute__((constructor)) static void charrnn_choose_panels_kernel(void) {
    const char *asked = getenv("CHARRNN_RECURRENT_PRODUCTS");
    if (asked && strcmp(asked, "blas") == 0) {
        set_kernel(CHARRNN_PANELS_BLAS, "CHARRNN_RECURRENT_PRODUCTS=blas");
        return;
    }
    if (asked && strcmp(asked, "portable") == 0) {
        set_kernel(CHARRNN_PANELS_PORTABLE, "CHARRNN_RECURRENT_PRODUCTS=portable");
        return;
    }
    int avx2_asked = asked && strcmp(asked, "avx2") == 0, avx512_asked = asked && strcmp(asked, "avx512") == 0;
#ifdef CHARRNN_HAS_AVX2_PANELS
    __builtin_cpu_init();
    int has_avx2 = cpu_has_avx2(), has_avx512 = __builtin_cpu_supports("avx512f");
    /* Asked for by name, a kernel runs on any CPU that has its instructions
     * (the AVX2 one on AVX-512 CPUs too): that is how they are measured
     * against each other and against BLAS. */
    if (avx2_asked) {
        if (has_avx2)
            set_kernel(CHARRNN_PANELS_AVX2, "CHARRNN_RECURRENT_PRODUCTS=avx2");
        else
            set_kernel(CHARRNN_PANELS_BLAS, "CHARRNN_RECURRENT_PRODUCTS=avx2, but no AVX2 and FMA");
        return;
    }
    if (avx512_asked) {
        if (has_avx512)
            set_kernel(CHARRNN_PANELS_AVX512, "CHARRNN_RECURRENT_PRODUCTS=avx512");
        else
            set_kernel(CHARRNN_PANELS_BLAS, "CHARRNN_RECURRENT_PRODUCTS=avx512, but no AVX-512");
        return;
    }
    if (has_avx512)
        set_kernel(CHARRNN_PANELS_AVX512, "");
    else if (has_avx2)
        set_kernel(CHARRNN_PANELS_AVX2, "");
    else
        set_kernel(CHARRNN_PANELS_BLAS, "no AVX2 and FMA");
#else
    if (avx2_asked || avx512_asked) {
        set_kernel(CHARRNN_PANELS_BLAS, avx2_asked ? "CHARRNN_RECURRENT_PRODUCTS=avx2: not in this build"
                                                   : "CHARRNN_RECURRENT_PRODUCTS=avx512: not in this build");
        return;
    }
    set_kernel(CHARRNN_PANELS_BLAS, "no kernel of ours measured here");
#endif
    /* A misspelt value is named on the Compute: line (charrnn_runtime's 64
     * characters), and the kernel chosen as without it. */
    if (asked)
        snprintf(panels_kernel_reason, sizeof panels_kernel_reason,
                 "CHARRNN_RECURRENT_PRODUCTS=%.12s unknown", asked);
}

int32_t charrnn_panels_kernel(void) { return panels_kernel; }

void panels_kernel_describe(char *out, size_t size) {
    const char *kernel = panels_kernel == CHARRNN_PANELS_AVX512     ? "packed AVX-512"
                         : panels_kernel == CHARRNN_PANELS_AVX2     ? "packed AVX2"
                         : panels_kernel == CHARRNN_PANELS_PORTABLE ? "packed portable"
                                                                    : "BLAS";
    if (panels_kernel_reason[0])
        snprintf(out, size, "%s (%s)", kernel, panels_kernel_reason);
    else
        snprintf(out, size, "%s", kernel);
}

static void panels_run(int kernel, size_t M, size_t N, size_t k0, size_t K, const float *A,
                       size_t lda, const float *P, size_t panel_k, int accumulate, float *C,
                       size_t ldc) {
#ifdef CHARRNN_HAS_AVX2_PANELS
    if (kernel == CHARRNN_PANELS_AVX512) {
        for (size_t j0 = 0; j0 < N; j0 += 2 * PANEL) {
            size_t n[2] = {N - j0 < PANEL ? N - j0 : PANEL, 0};
            if (j0 + PANEL < N) n[1] = N - j0 - PANEL < PANEL ? N - j0 - PANEL : PANEL;
            const float *first = P + j0 * panel_k + k0 * PANEL;
            /* a lone last panel names itself twice: no pointer past P's end is formed */
            const float *panel[2] = {first, n[1] ? first + PANEL * panel_k : first};
            panels_avx512(M, n[1] ? 2 : 1, n, K, A, lda, panel, accumulate, C + j0, ldc);
        }
        return;
    }
#endif
    for (size_t j0 = 0; j0 < N; j0 += PANEL) {
        size_t n = N - j0 < PANEL ? N - j0 : PANEL;
        const float *panel = P + j0 * panel_k + k0 * PANEL;
#ifdef CHARRNN_HAS_AVX2_PANELS
        if (kernel == CHARRNN_PANELS_AVX2) {
            panel_avx2(M, n, K, A, lda, panel, accumulate, C + j0, ldc);
            continue;
        }
#endif
        (void)kernel;
        panel_portable(M, n, K, A, lda, panel, accumulate, C + j0, ldc);
    }
}

void panels_product(const char *name, int trans_b, size_t M, size_t N, size_t k0, size_t K,
                    const float *A, size_t lda, const float *P, size_t panel_k, int accumulate,
                    float *C, size_t ldc) {
    if (M == 0 || N == 0) return;
    double start = products_logged() ? product_clock() : -1.0;
    panels_run(panels_kernel, M, N, k0, K, A, lda, P, panel_k, accumulate, C, ldc);
    if (start >= 0.0) record_product(name, 0, trans_b, M, N, K, C, product_clock() - start);
}

charrnn_status charrnn_panels_product(int32_t kernel, int32_t trans_b, int32_t m, int32_t n,
                                      int32_t k, const float *a, const float *b, int32_t accumulate,
                                      float *c) {
    if (!a || !b || !c) return CHARRNN_ERR_NULL_POINTER;
    if (m < 1 || n < 1 || k < 1) return CHARRNN_ERR_INVALID_SHAPE;
    if (kernel != CHARRNN_PANELS_PORTABLE && kernel != CHARRNN_PANELS_AVX2 && kernel != CHARRNN_PANELS_AVX512)
        return CHARRNN_ERR_INVALID_ARGUMENT;
#ifdef CHARRNN_HAS_AVX2_PANELS
    __builtin_cpu_init(); /* the chooser may have returned before its own call */
    if (kernel == CHARRNN_PANELS_AVX2 && !cpu_has_avx2()) return CHARRNN_ERR_INVALID_ARGUMENT;
    if (kernel == CHARRNN_PANELS_AVX512 && !__builtin_cpu_supports("avx512f")) return CHARRNN_ERR_INVALID_ARGUMENT;
#else
    if (kernel != CHARRNN_PANELS_PORTABLE) return CHARRNN_ERR_INVALID_ARGUMENT;
#endif
    size_t M = (size_t)m, N = (size_t)n, K = (size_t)k;
    float *P = malloc(panel_count(N, K) * sizeof *P);
    if (!P) return CHARRNN_ERR_INVALID_SHAPE;
    pack_panels(trans_b != 0, b, trans_b ? K : N, N, K, P);
    panels_run(kernel, M, N, 0, K, a, K, P, K, accumulate != 0, c, N);
    free(P);
    return CHARRNN_OK;
}
