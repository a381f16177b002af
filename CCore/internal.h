/*
 * Internal to the C core: the carving of caller-owned blocks into named
 * pointers, the fast element-wise math, the counter-based random numbers and
 * the parallel GEMM helpers. Not part of the public API.
 */
#ifndef CHARRNN_INTERNAL_H
#define CHARRNN_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "charrnn.h"
#include "charrnn_measure.h"

#ifdef _OPENMP
#include <omp.h> /* before the visibility push below: its functions are the runtime's */
#endif

/* Everything declared below is the core's own: hidden from the library's
 * exported symbols, so a program (or a second copy of the core, as
 * Tools/core-ab loads) never binds to it or clashes with it. */
#pragma GCC visibility push(hidden)


/* ---- cells ----
 * What a recurrent cell is, stated once (cells.c holds the table). Every
 * cell has `gates` blocks of H rows in W_ih [gates*H, I], W_hh [gates*H, H]
 * and the two biases, and computes, per step, from the input term
 * W_ih x + b_ih and the recurrent term W_hh h + b_hh of each block:
 *   LSTM (i, f, g, o): c' = f c + i g, h' = o tanh(c')
 *   GRU (r, z, n):     n = tanh(x_n + r (W_hn h + b_hn)), h' = (1-z) n + z h
 *   RNN:               h' = tanh(x + W_hh h + b_hh)
 * For most blocks the two terms are simply added, so b_hh folds into the
 * input term and the recurrent product accumulates into the same row of G.
 * The last `split` blocks (the GRU's n) keep their recurrent term apart,
 * because a gate multiplies it: its product goes to R and its b_hh is added
 * by the kernel. */

/* Arguments of a cell's forward kernel for one step: rows [b0, b1) of the
 * streams, units [u0, u1) of every gate block. Training calls it with all
 * units; charrnn_step with each thread's slice of them. Row strides: G
 * gates*H, R split*H, everything else H. */
typedef struct {
    size_t H, u0, u1, b0, b1;
    float *G;              /* in: the non-split blocks' recurrent terms plus, above layer 0,
                              every block's input product; out: the activated gates */
    const float *R;        /* the split blocks' recurrent products W_hh h (no bias) */
    const float *x_rows;   /* the rest of the input term, added to G: row
                              tokens[b * token_stride] of this table (layer 0's
                              lookup), or its row 0 for every b when tokens is NULL */
    const int32_t *tokens;
    size_t token_stride;
    const float *b_split;  /* b_hh of the split blocks */
    const float *h_prev;   /* h_{t-1} */
    const float *c_prev;   /* c_{t-1} (cells with two state tensors) */
    float *h, *c;          /* h_t, c_t */
    float *aux;            /* what backward needs besides the gates (LSTM: tanh c_t;
                              GRU: W_hn h + b_hn); NULL for the RNN */
} cell_forward_args;

/* Arguments of a cell's backward kernel for one step, rows [b0, b1), all
 * units. */
typedef struct {
    size_t H, b0, b1;
    const float *G, *aux, *h_prev, *c_prev, *h; /* the step's forward values */
    const float *dy, *mask; /* gradient at the layer's output y_t, its dropout mask */
    float *dh_rec;  /* in: gradient reaching h_t through W_hh from step t+1;
                       out: the gradient reaching h_{t-1} by any other path
                       (GRU: z dh; others: 0); the caller then adds the
                       W_hh products */
    float *dc_next; /* LSTM: in, gradient reaching c_t; out, reaching c_{t-1} */
    float *dG;      /* gradient of the input terms (= of the recurrent terms of
                       the non-split blocks) */
    float *dR;      /* gradient of the split blocks' recurrent terms */
} cell_backward_args;

typedef struct {
    const char *name;  /* --cell value and tensor-name prefix */
    int gates;         /* gate blocks of H rows */
    int split;         /* trailing blocks whose recurrent term stays apart (see above) */
    int states;        /* state tensors per layer: 2 (h, c) or 1 (h) */
    int has_aux;       /* keeps an [N, H] aux tensor per layer for backward */
    /* Initialisation: weights uniform in +-sqrt(6 / (I + H + gates*H)) (the
     * Glorot limit of the fused [I + H, gates*H] kernel), bias_hh zero and
     * bias_ih of gate block q equal to bias_ih_init[q] (`gates` values), or
     * zero when bias_ih_init is NULL. */
    const float *bias_ih_init;
    void (*forward)(const cell_forward_args *a);
    void (*backward)(const cell_backward_args *a);
} cell_kind;

/* The cell of a checked configuration (never NULL after check_config). */
const cell_kind *cell_of(const charrnn_config *c);

/* The widths of a layer's gate blocks: GH = gates*H in all; the first
 * FH = (gates - split)*H fold their recurrent term into G, the last
 * SH = split*H keep it apart. */
typedef struct {
    size_t H, GH, FH, SH;
} gate_widths;

static inline gate_widths widths_of(const cell_kind *cell, size_t H) {
    gate_widths w = {H, (size_t)cell->gates * H, (size_t)(cell->gates - cell->split) * H,
                     (size_t)cell->split * H};
    return w;
}

/* ---- parameter block, carved into named tensors (same for gradients) ---- */
typedef struct {
    float *weight_ih[CHARRNN_MAX_LAYERS]; /* [gates*H, I_k] */
    float *weight_hh[CHARRNN_MAX_LAYERS]; /* [gates*H, H] */
    float *bias_ih[CHARRNN_MAX_LAYERS];   /* [gates*H] */
    float *bias_hh[CHARRNN_MAX_LAYERS];   /* [gates*H] */
    float *fc_weight;                      /* [V, H] */
    float *fc_bias;                        /* [V] */
} param_tensors;

void carve_params(const charrnn_config *c, float *block, param_tensors *out);
size_t param_count_unchecked(const charrnn_config *c);

/* ---- activation block for a B x T batch ----
 * With GH = gates*H and SH = split*H. Forward part (read by backward, never
 * written by it), per layer l:
 *   gates[l]  [N, GH]       activated gates
 *   h[l]      [(T+1), B, H] slot 0 = initial h, slot t+1 = h after step t
 *   c[l]      [(T+1), B, H] same for c (cells with two state tensors)
 *   aux[l]    [N, H]        the cell's aux values (cells that keep them)
 *   mask[l]   [N, H]        dropout mask, 0 or 1/keep_prob
 *   y[l]      [N, H]        layer output after dropout (input of layer l+1)
 * then probs [N, V] (softmax of the logits).
 * Backward scratch: dlogits [N, V], dgates [N, GH], dsplit [N, SH],
 *   dy [N, H], dh_rec [B, H], dc_next [B, H] (two-state cells).
 * embed [V, GH]: layer 0's input term as a lookup table (row v =
 *   W_ih[:, v] + b_ih + the folded b_hh) in forward; its gradient by token in
 *   backward. rec [B, SH]: one step's split recurrent products.
 * panels: one layer's W_hh packed for the recurrent products (panels.c),
 *   only where a packed kernel runs them, in fp32 passes.
 * bf16_room: in bf16 passes only, the room of their products (bf16.c): the
 *   larger of the widest product's and the recurrence's (one layer's W_hh
 *   packed and a step's rows rounded), in uint16 values.
 * Each region starts on a 16-float (64-byte) boundary of the block; a
 * region a cell does not use takes no space.
 */
typedef struct {
    float *gates[CHARRNN_MAX_LAYERS];
    float *h[CHARRNN_MAX_LAYERS];
    float *c[CHARRNN_MAX_LAYERS];
    float *aux[CHARRNN_MAX_LAYERS];
    float *mask[CHARRNN_MAX_LAYERS];
    float *y[CHARRNN_MAX_LAYERS];
    float *probs;
    float *dlogits;
    float *dgates;
    float *dsplit;
    float *dy;
    float *dh_rec;
    float *dc_next;
    float *embed;
    float *rec;
    float *panels;
    uint16_t *bf16_room;
} activation_tensors;

/* Returns the float count of an fp32 pass's block (bf16 0) or a bf16
 * pass's; carves when block != NULL. */
size_t carve_activations(const charrnn_config *c, size_t B, size_t T, int bf16, float *block,
                         activation_tensors *out);

/* ---- argument checks shared by the entry points ---- */
charrnn_status check_config(const charrnn_config *c);
charrnn_status check_batch_shape(int32_t batch_size, int32_t steps);

/* ---- counter-based random numbers: pure functions, no state ---- */
static inline uint64_t splitmix64_mix(uint64_t z) {
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ULL;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z;
}

/* The idx-th draw of stream `seed`, uniform on [0, 1) with 24 bits. */
static inline float uniform_at(uint64_t seed, uint64_t idx) {
    uint64_t z = splitmix64_mix(seed + 0x9E3779B97F4A7C15ULL * (idx + 1));
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

/* ---- fast element-wise math ----
 * libm's expf/tanhf cost 20-50x an inlined polynomial here, and they keep
 * the gate loops from vectorising. fast_exp: Cephes-style range reduction
 * and degree-6 polynomial; relative error below 2e-7 on [-87, 88], with the
 * input clamped there (so no inf/NaN from finite input). The sigmoid and
 * tanh built on it have absolute error below 3e-7 (tested).
 * The rounding uses the 1.5*2^23 trick instead of rintf so the loop
 * vectorises on plain SSE2.
 * NaN in gives NaN out, without undefined behaviour: the range reduction
 * runs on 0 in its place (converting NaN to an integer is undefined in C, and
 * UBSan reports it), and the NaN is returned at the end. Both selects are
 * blends, so the loops still vectorise. NaN reaches here only when weights
 * have gone non-finite; the callers then report CHARRNN_ERR_NON_FINITE.
 */
static inline float fast_exp(float in) {
    float x = in == in ? in : 0.0f;
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float shifter = 12582912.0f; /* 1.5 * 2^23 */
    float n = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { uint32_t i; float f; } scale;
    scale.i = (uint32_t)((int32_t)n + 127) << 23;
    return in == in ? p * scale.f : in;
}

static inline float fast_sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }
static inline float fast_tanh(float x) { return 2.0f / (1.0f + fast_exp(-2.0f * x)) - 1.0f; }

/* ---- denormals ----
 * Gradients that underflow into the subnormal range make x86 floating point
 * take microcode assists, slowing every product that touches them many
 * times over. The training passes (charrnn_forward, charrnn_backward and
 * their products alone, in model.c) flush subnormals to zero (FTZ and DAZ)
 * on every thread of their team for their duration and restore the threads'
 * previous modes on the way out, so callers' own arithmetic is untouched.
 * Values below 1.2e-38 become 0: far below anything the model's arithmetic
 * can resolve in float32. The optimizer, clipping and charrnn_step leave
 * the threads' modes as they are. */
typedef struct {
    unsigned int caller;
} float_mode;

float_mode flush_denormals_begin(void);
void flush_denormals_end(float_mode saved);

/* Hot element-wise kernels are compiled for AVX-512, AVX2+FMA and plain
 * x86-64, and the loader picks the one the CPU runs (target_clones), so the
 * library stays portable without -march=native.
 * CHARRNN_NO_TARGET_CLONES builds one baseline version instead: for
 * ThreadSanitizer, whose runtime is not yet started when the loader runs the
 * clones' (instrumented) resolvers, so every binary would crash at load. */
#if defined(__x86_64__) && defined(__clang__) && !defined(CHARRNN_NO_TARGET_CLONES)
#define CHARRNN_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CHARRNN_VECTOR_CLONES
#endif

/* ---- threading helpers ----
 * OpenMP is optional. Built without it (no -fopenmp; the package's
 * CHARRNN_OPENMP=off, or a compiler with no OpenMP runtime, such as Apple's
 * clang), every `#pragma omp parallel` region runs on the calling thread
 * alone, and these stand-ins make the thread queries say so: one team of
 * one, the arithmetic of one OpenMP thread in the same order. `#pragma omp
 * simd` still applies where the compiler has -fopenmp-simd. */
#ifdef _OPENMP
#define THREADS_BARRIER _Pragma("omp barrier")
#else
#define THREADS_BARRIER /* one thread: nothing to wait for */
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_get_max_threads(void) { return 1; }
#endif

/* How idle threads wait can be set only in LLVM's (and Intel's) runtime,
 * whose omp.h declares kmp_set_blocktime; GNU libgomp reads GOMP_SPINCOUNT
 * and OMP_WAIT_POLICY once at start-up and has no call for it. */
#if defined(_OPENMP) && defined(KMP_VERSION_MAJOR)
#define CHARRNN_HAS_KMP_BLOCKTIME 1
#endif

/* Idle threads of the calling thread's teams sleep at once (training
 * entry points) or spin as libomp does by default (charrnn_step); both do
 * nothing when the user set KMP_BLOCKTIME or OMP_WAIT_POLICY. runtime.c
 * says why. */
void threads_wait_passively(void);
void threads_wait_actively(void);
/* Both also keep the calling thread's teams at the size asked: OMP_DYNAMIC
 * may not shrink them (runtime.c says why). */

/* The fixed blocks the work whose result depends on its partition is split
 * into (the rows of a matrix product: OpenBLAS rounds a row differently
 * when it is made in a call of another height; partial sums), whatever the
 * size of the team that runs them: so training gives the same bits with
 * any number of threads. The count is the processors the process may run
 * on when the core is loaded (runtime.c), so it matches the usual team and
 * costs nothing there; a thread runs blocks thread, thread + team, ... */
enum { MAX_WORK_BLOCKS = 64 };
int work_blocks(void);
#define FOR_EACH_OWN_BLOCK(block, blocks) \
    for (int block = omp_get_thread_num(); block < (blocks); block += omp_get_num_threads())

/* The [begin, end) share of `count` items for thread (or block) `thread` of
 * `threads`, in multiples of `align` items where possible. */
static inline void thread_range(size_t count, int thread, int threads, size_t align,
                                size_t *begin, size_t *end) {
    size_t units = (count + align - 1) / align;
    size_t b = units * (size_t)thread / (size_t)threads * align;
    size_t e = units * (size_t)(thread + 1) / (size_t)threads * align;
    *begin = b < count ? b : count;
    *end = e < count ? e : count;
}

/* C[M, N] = alpha * op(A) op(B) + beta * C (row-major), with the M rows split
 * across the OpenMP team, each thread calling single-threaded sgemm on its
 * block. Must be called outside a parallel region. `name` says what the
 * product is in the model (a string literal: the product log keeps it). */
void gemm_rows_parallel(const char *name, int trans_a, int trans_b, size_t M, size_t N, size_t K,
                        float alpha, const float *A, size_t lda, const float *B, size_t ldb,
                        float beta, float *C, size_t ldc);

/* The same for one thread's share, for use inside a parallel region. */
void gemm_block(const char *name, int trans_a, int trans_b, size_t M, size_t N, size_t K,
                float alpha, const float *A, size_t lda, const float *B, size_t ldb, float beta,
                float *C, size_t ldc);

/* out[r] += W[r, :] x for the `rows` rows of W [rows, K] (row-major): the
 * S = 1 product of sampling, which the log records as M = 1, trans_b. */
void gemv_block(const char *name, size_t rows, size_t K, const float *W, const float *x,
                float *out);

/* ---- bfloat16 products (bf16.c says how they round) ----
 * A matrix packed for vdpbf16ps: blocks of 16 rows, pairs of columns. */
typedef struct {
    const uint16_t *data;
    size_t rows, cols, pairs; /* pairs = ceil(cols / 2) */
} bf16_matrix;

/* The packed block's matrices (layer 0's weight_ih is never packed: its
 * input is a one-hot lookup). */
typedef struct {
    bf16_matrix weight_ih[CHARRNN_MAX_LAYERS];
    bf16_matrix weight_hh[CHARRNN_MAX_LAYERS];
    bf16_matrix fc_weight;
} bf16_weights;

/* Returns the uint16 count of the packed block; carves when block != NULL. */
size_t carve_bf16_weights(const charrnn_config *config, const uint16_t *block, bf16_weights *out);

/* fp32 to bf16, to nearest even, subnormals to zero (as VCVTNE2PS2BF16). */
uint16_t bf16_from_float(float value);
void bf16_round_row(const float *x, size_t count, uint16_t *out);

/* out[s * ldo + r - row0] += W[r, :] x_s for rows [row0, row0 + rows) and
 * inputs s in [0, S), x_s = x + s * ldx holding 2 * pairs bf16 values (an
 * odd cols' pad a zero). A row's result depends only on the row and x_s. */
void bf16_rows_times(const bf16_matrix *W, size_t row0, size_t rows, size_t S, const uint16_t *x,
                     size_t ldx, float *out, size_t ldo);

/* "AVX512_BF16", or "portable (why)". */
void bf16_kernel_describe(char *out, size_t size);

/* Training's products in bf16 (bf16.c says how).
 * uint16 values of an [R, K] matrix packed. */
size_t bf16_packed_count(size_t R, size_t K);
/* uint16 room of one product op(A) [M, K] times op(B) [K, N]: op(B)
 * packed, then op(A)'s rows rounded. */
size_t bf16_product_room(size_t M, size_t N, size_t K);
/* Packs op(W) [R, K] (W[r * ld + k], or W[k * ld + r] when trans) into
 * out and describes it in *packed; splits the work across a team, so call
 * it outside a parallel region. */
void bf16_pack_parallel(int trans, const float *W, size_t ld, size_t R, size_t K, uint16_t *out,
                        bf16_matrix *packed);
/* Rows [m0, m1) of op(A) [M, K] (A[m * lda + k], or A[k * lda + m] when
 * trans) rounded into out, row m at out + m * ldo (ldo >= 2 * ceil(K / 2)),
 * an odd K's pad a zero. */
void bf16_round_rows(int trans, const float *A, size_t lda, size_t m0, size_t m1, size_t K,
                     uint16_t *out, size_t ldo);
/* gemm_rows_parallel's C = op(A) op(B) + beta C (beta 0 or 1) in bf16:
 * room holds bf16_product_room(M, N, K) values. */
void bf16_product_rows_parallel(const char *name, int trans_a, int trans_b, size_t M, size_t N,
                                size_t K, const float *A, size_t lda, const float *B, size_t ldb,
                                float beta, float *C, size_t ldc, uint16_t *room);

/* ---- the recurrence's products on packed weights (panels.c) ----
 * P: B packed into panels of 16 columns of C, each holding every k
 * (panel_count floats). trans_b: B is [N, K] (C = A B^T) rather than [K, N]. */
size_t panel_count(size_t N, size_t K);
void pack_panels(int trans_b, const float *B, size_t ldb, size_t N, size_t K, float *P);

/* C[M, N] = (accumulate ? C : 0) + A[:, 0:K] P[k0:k0+K, :], A row-major with
 * K columns from its first, P packed with panel_k values of k per column.
 * Recorded in the product log as the sgemm it replaces (name, trans_b). */
void panels_product(const char *name, int trans_b, size_t M, size_t N, size_t k0, size_t K,
                    const float *A, size_t lda, const float *P, size_t panel_k, int accumulate,
                    float *C, size_t ldc);

/* "packed AVX-512", "packed AVX2", "packed portable (why)" or "BLAS (why)";
 * a kernel asked for by name carries the request as its why. */
void panels_kernel_describe(char *out, size_t size);

/* Every matrix product goes through these (and panels_product), and each is timed and
 * recorded only while a log is attached (charrnn_measure.h, measure.c):
 * otherwise it costs a load and a branch. */
extern charrnn_product_log *product_log;
static inline int products_logged(void) {
    /* A relaxed atomic load (a plain load on x86 and ARM64): tests and the
     * bench attach the log while other threads compute. */
    return __builtin_expect(__atomic_load_n(&product_log, __ATOMIC_RELAXED) != NULL, 0);
}
/* Seconds on a monotonic clock. */
double product_clock(void);
void record_product(const char *name, int trans_a, int trans_b, size_t M, size_t N, size_t K,
                    const float *C, double seconds);

#pragma GCC visibility pop

#endif /* CHARRNN_INTERNAL_H */
