/*
 * The measurement entries of charrnn_measure.h (besides the products-alone
 * copies, which live beside the passes they copy): the product log, the
 * rate of one product made on every thread at once, and the rate of the
 * FMA units themselves. `charrnn bench` sets what a training step's
 * products achieve beside these two limits.
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include <time.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "internal.h"

/* ---- the product log ----
 * The log and the output range it records, each read and written
 * atomically, since tests attach it while other threads compute. */
charrnn_product_log *product_log;
static uintptr_t logged_outputs_begin, logged_outputs_end;

charrnn_status charrnn_log_products(charrnn_product_log *log, const float *outputs, size_t count) {
    if (log && !outputs) return CHARRNN_ERR_NULL_POINTER;
    if (!log) {
        __atomic_store_n(&product_log, NULL, __ATOMIC_SEQ_CST);
        __atomic_store_n(&logged_outputs_end, 0, __ATOMIC_SEQ_CST);
        return CHARRNN_OK;
    }
    __atomic_store_n(&logged_outputs_begin, (uintptr_t)outputs, __ATOMIC_SEQ_CST);
    __atomic_store_n(&logged_outputs_end, (uintptr_t)(outputs + count), __ATOMIC_SEQ_CST);
    __atomic_store_n(&product_log, log, __ATOMIC_SEQ_CST);
    return CHARRNN_OK;
}

double product_clock(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

void record_product(const char *name, int trans_a, int trans_b, size_t M, size_t N, size_t K,
                    const float *C, double seconds) {
    /* Outside the range: another caller's product, which must not touch the log. */
    uintptr_t c = (uintptr_t)C;
    if (c < __atomic_load_n(&logged_outputs_begin, __ATOMIC_ACQUIRE) ||
        c >= __atomic_load_n(&logged_outputs_end, __ATOMIC_ACQUIRE))
        return;
    charrnn_product_log *log = __atomic_load_n(&product_log, __ATOMIC_ACQUIRE);
    if (!log) return;
    int64_t index = __atomic_fetch_add(&log->count, 1, __ATOMIC_RELAXED);
    if (index < log->capacity)
        log->entries[index] = (charrnn_product){omp_get_thread_num(), trans_a, trans_b, (int32_t)M,
                                                (int32_t)N, (int32_t)K, name, seconds};
}

/* ---- one product on every thread ---- */

charrnn_status charrnn_product_on_every_thread(const charrnn_product *product, int32_t repeats,
                                               const float *a, const float *b, float *c,
                                               double *seconds_per_call) {
    if (!product || !a || !b || !c || !seconds_per_call) return CHARRNN_ERR_NULL_POINTER;
    if (product->m < 1 || product->n < 1 || product->k < 1) return CHARRNN_ERR_INVALID_SHAPE;
    if (repeats < 1) return CHARRNN_ERR_INVALID_ARGUMENT;
    threads_wait_passively(); /* as the training passes wait */
    size_t M = (size_t)product->m, N = (size_t)product->n, K = (size_t)product->k;
    int trans_a = product->trans_a != 0, trans_b = product->trans_b != 0;
    double slowest = 0.0;
    float_mode mode = flush_denormals_begin();
#pragma omp parallel reduction(max : slowest)
    {
        float *own = c + (size_t)omp_get_thread_num() * M * N;
        /* Timed on each thread from a common start, so waking the team is
         * not counted; the slowest thread's time is the product's. */
        THREADS_BARRIER;
        double start = product_clock();
        for (int32_t r = 0; r < repeats; r++) {
            if (M == 1 && trans_b) /* how the log records a matrix-vector product */
                gemv_block("rate", N, K, b, a, own);
            else
                gemm_block("rate", trans_a, trans_b, M, N, K, 1.0f, a, trans_a ? M : K, b,
                           trans_b ? K : N, 1.0f, own, N);
        }
        slowest = product_clock() - start;
    }
    flush_denormals_end(mode);
    *seconds_per_call = slowest / repeats;
    return CHARRNN_OK;
}

/* ---- the FMA units' own rate ----
 * Twelve independent accumulators: enough to cover the FMA latency (4-5
 * cycles) on the two FMA pipes the CPUs here have, so the loop runs at the
 * units' throughput. acc = acc * m + a with m just below 1 converges, so no
 * value overflows or turns subnormal however long the loop runs. Each
 * variant returns the floating-point operations it made (2 per lane per
 * multiply-add). */
enum { FMA_CHAINS = 12 };

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
__attribute__((target("avx512f"))) static double fma_loop_avx512(int64_t rounds, float *sink) {
    __m512 acc[FMA_CHAINS];
    __m512 m = _mm512_set1_ps(0.9999999f), add = _mm512_set1_ps(1e-3f);
    for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (int64_t r = 0; r < rounds; r++)
        for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], m, add);
    __m512 sum = acc[0];
    for (int i = 1; i < FMA_CHAINS; i++) sum = _mm512_add_ps(sum, acc[i]);
    *sink = _mm512_reduce_add_ps(sum);
    return (double)rounds * FMA_CHAINS * 16 * 2;
}

__attribute__((target("avx2,fma"))) static double fma_loop_avx2(int64_t rounds, float *sink) {
    __m256 acc[FMA_CHAINS];
    __m256 m = _mm256_set1_ps(0.9999999f), add = _mm256_set1_ps(1e-3f);
    for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (int64_t r = 0; r < rounds; r++)
        for (int i = 0; i < FMA_CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], m, add);
    __m256 sum = acc[0];
    for (int i = 1; i < FMA_CHAINS; i++) sum = _mm256_add_ps(sum, acc[i]);
    float lanes[8];
    _mm256_storeu_ps(lanes, sum);
    *sink = lanes[0] + lanes[7];
    return (double)rounds * FMA_CHAINS * 8 * 2;
}
#endif

/* Any other CPU: 128-bit vectors, which every 64-bit target has (the
 * compiler contracts the multiply-add into one FMA where the target has it). */
typedef float float4 __attribute__((vector_size(16)));

static double fma_loop_vector128(int64_t rounds, float *sink) {
    float4 acc[FMA_CHAINS];
    float4 m = {0.9999999f, 0.9999999f, 0.9999999f, 0.9999999f};
    float4 add = {1e-3f, 1e-3f, 1e-3f, 1e-3f};
    for (int i = 0; i < FMA_CHAINS; i++) acc[i] = (float4){(float)i, (float)i, (float)i, (float)i};
    for (int64_t r = 0; r < rounds; r++)
        for (int i = 0; i < FMA_CHAINS; i++) acc[i] = acc[i] * m + add;
    float4 sum = acc[0];
    for (int i = 1; i < FMA_CHAINS; i++) sum += acc[i];
    *sink = sum[0] + sum[3];
    return (double)rounds * FMA_CHAINS * 4 * 2;
}

typedef double (*fma_loop)(int64_t rounds, float *sink);

/* The widest multiply-add the CPU runs. */
static fma_loop widest_fma_loop(const char **instructions) {
#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        *instructions = "AVX-512 FMA";
        return fma_loop_avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        *instructions = "AVX2 FMA";
        return fma_loop_avx2;
    }
#endif
    *instructions = "128-bit vector multiply-add";
    return fma_loop_vector128;
}

charrnn_status charrnn_fma_loop(int64_t rounds, double *flops_per_thread, double *seconds,
                                const char **instructions) {
    if (!flops_per_thread || !seconds || !instructions) return CHARRNN_ERR_NULL_POINTER;
    if (rounds < 1) return CHARRNN_ERR_INVALID_ARGUMENT;
    fma_loop loop = widest_fma_loop(instructions);
    threads_wait_passively();
    double flops = 0.0, slowest = 0.0;
    float sinks[256] = {0};
#pragma omp parallel reduction(max : slowest)
    {
        int thread = omp_get_thread_num();
        THREADS_BARRIER;
        double start = product_clock();
        double made = loop(rounds, &sinks[thread % 256]);
        slowest = product_clock() - start;
        if (thread == 0) flops = made;
    }
    /* The sums are read, so no compiler may drop the loops. */
    volatile float kept = sinks[0];
    (void)kept;
    *flops_per_thread = flops;
    *seconds = slowest;
    return CHARRNN_OK;
}
