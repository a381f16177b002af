/*
 * Process-level set-up of the BLAS library, status messages, and the GEMM
 * helpers that split work across the OpenMP team.
 *
 * Why a load-time constructor: Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH)
 * picks its kernels in its own ELF constructor. On CPUs newer than it knows
 * (e.g. Emerald Rapids) it falls back to "Prescott" SSE3 kernels that run
 * sgemm 5-9x slower. setenv() in main() is too late; what works is
 * gotoblas_dynamic_quit(), OPENBLAS_CORETYPE, gotoblas_dynamic_init(), done
 * before any other thread calls BLAS. Our constructor runs after
 * OpenBLAS's (it is our dependency) and before main, single-threaded.
 * The result is the only process-wide state the core has, it is written
 * once at load time, and it is read-only afterwards.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include <cblas.h>
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define CHARRNN_HAS_MXCSR 1
#endif

#include "internal.h"

const char *charrnn_status_message(charrnn_status status) {
    switch (status) {
    case CHARRNN_OK: return "ok";
    case CHARRNN_ERR_NULL_POINTER: return "a required pointer argument is NULL";
    case CHARRNN_ERR_INVALID_CONFIG:
        return "invalid model configuration: need 1 <= vocab_size <= 2^21, 1 <= hidden_size <= 2^14, "
               "1 <= num_layers <= 64";
    case CHARRNN_ERR_INVALID_SHAPE:
        return "invalid batch shape: need batch_size >= 1, steps >= 1 and batch_size * steps <= 2^26";
    case CHARRNN_ERR_TOKEN_OUT_OF_RANGE: return "an input or target token is outside [0, vocab_size)";
    case CHARRNN_ERR_INVALID_ARGUMENT: return "a scalar argument is outside its valid range";
    case CHARRNN_ERR_INDEX_OUT_OF_RANGE: return "tensor index outside [0, tensor count)";
    case CHARRNN_ERR_NON_FINITE: return "a loss, gradient norm, weight or logit is NaN or infinite";
    }
    return "unknown status code";
}

/* ---- BLAS kernel and thread set-up ---- */

static char blas_core_selected_by[32] = "library";

/* Kernel sets that already use AVX2/FMA or AVX-512: leave them alone. */
static int core_is_modern(const char *core) {
    static const char *modern[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"};
    if (!core) return 0;
    for (size_t i = 0; i < sizeof modern / sizeof modern[0]; i++)
        if (strcasecmp(core, modern[i]) == 0) return 1;
    return 0;
}

__attribute__((constructor)) static void charrnn_configure_blas(void) {
    /* Two pools (OpenBLAS's pthreads and our OpenMP team) spinning on two
     * cores slow each other down badly; the core calls BLAS from inside its
     * own OpenMP regions, so BLAS runs single-threaded. With the OpenMP
     * build of OpenBLAS (parallel == 2) that call would also shrink our own
     * teams, and nested regions run single-threaded anyway: skip it. */
    if (openblas_get_parallel() == 1) openblas_set_num_threads(1);

    const char *user = getenv("OPENBLAS_CORETYPE");
    if (user && *user) {
        snprintf(blas_core_selected_by, sizeof blas_core_selected_by, "user (OPENBLAS_CORETYPE)");
        return;
    }
    if (core_is_modern(openblas_get_corename())) return;

    __builtin_cpu_init();
    const char *wanted = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        wanted = "SKYLAKEX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        wanted = "HASWELL";
    if (!wanted) return; /* an old CPU: the library's choice is right */

    /* Exported by DYNAMIC_ARCH builds only; absent elsewhere, then do nothing. */
    void (*dyn_quit)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    void (*dyn_init)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    if (!dyn_quit || !dyn_init) return;
    dyn_quit();
    setenv("OPENBLAS_CORETYPE", wanted, 1);
    dyn_init();
    unsetenv("OPENBLAS_CORETYPE"); /* child processes choose for themselves */
    snprintf(blas_core_selected_by, sizeof blas_core_selected_by, "charrnn");
}

/* ---- how idle OpenMP threads wait ----
 * LLVM's libomp lets a thread that finishes its share spin for 200 ms
 * before sleeping. That is right when both cores are ours and wrong when
 * another process holds one: the spinning thread takes the CPU time the
 * thread it waits for needs, and two threads run slower than one (measured
 * here: 1.9x slower for the small configuration). Training calls are long
 * (milliseconds to seconds) and fork a team only a few dozen times, so their
 * threads sleep as soon as they are idle (blocktime 0); waking them costs
 * microseconds per region. charrnn_step is short (tens of microseconds) and
 * called back to back, so sleeping there would cost more than the work:
 * it keeps libomp's spinning. A user who sets KMP_BLOCKTIME or
 * OMP_WAIT_POLICY decides instead, and the core never changes it. */
static int wait_policy_from_user;
static int spin_blocktime_ms = 200;

__attribute__((constructor)) static void charrnn_configure_waiting(void) {
    const char *blocktime = getenv("KMP_BLOCKTIME"), *policy = getenv("OMP_WAIT_POLICY");
    wait_policy_from_user = (blocktime && *blocktime) || (policy && *policy);
    if (!wait_policy_from_user) spin_blocktime_ms = kmp_get_blocktime();
}

void threads_wait_passively(void) {
    if (!wait_policy_from_user) kmp_set_blocktime(0);
}

void threads_wait_actively(void) {
    if (!wait_policy_from_user) kmp_set_blocktime(spin_blocktime_ms);
}

void charrnn_runtime_get(charrnn_runtime *runtime) {
    if (!runtime) return;
    memset(runtime, 0, sizeof *runtime);
    const char *core = openblas_get_corename();
    const char *config = openblas_get_config();
    snprintf(runtime->blas_core, sizeof runtime->blas_core, "%s", core ? core : "unknown");
    snprintf(runtime->blas_config, sizeof runtime->blas_config, "%s", config ? config : "unknown");
    snprintf(runtime->blas_core_selected_by, sizeof runtime->blas_core_selected_by, "%s",
             blas_core_selected_by);
    runtime->blas_threads = openblas_get_num_threads();
    runtime->compute_threads = omp_get_max_threads();
    if (wait_policy_from_user)
        snprintf(runtime->thread_waiting, sizeof runtime->thread_waiting,
                 "user (KMP_BLOCKTIME / OMP_WAIT_POLICY)");
    else
        snprintf(runtime->thread_waiting, sizeof runtime->thread_waiting,
                 "sleep in training, spin %d ms in stepping", spin_blocktime_ms);
}

/* ---- GEMM helpers ---- */

void gemm_block(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                size_t ldc) {
    if (M == 0 || N == 0) return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

void gemm_rows_parallel(int trans_a, int trans_b, size_t M, size_t N, size_t K, float alpha,
                        const float *A, size_t lda, const float *B, size_t ldb, float beta,
                        float *C, size_t ldc) {
    /* Below ~1 MFLOP a fork costs more than it saves. */
    int parallel = (double)M * (double)N * (double)K > 5e5 && M >= 32;
#pragma omp parallel if (parallel)
    {
        size_t begin, end;
        thread_range(M, omp_get_thread_num(), omp_get_num_threads(), 16, &begin, &end);
        if (end > begin) {
            const float *A_block = trans_a ? A + begin : A + begin * lda;
            gemm_block(trans_a, trans_b, end - begin, N, K, alpha, A_block, lda, B, ldb, beta,
                       C + begin * ldc, ldc);
        }
    }
}

charrnn_status charrnn_gemm_nt(int32_t m, int32_t n, int32_t k, const float *a, const float *b,
                               float *c) {
    if (!a || !b || !c) return CHARRNN_ERR_NULL_POINTER;
    if (m < 1 || n < 1 || k < 1) return CHARRNN_ERR_INVALID_SHAPE;
    threads_wait_passively();
    gemm_rows_parallel(0, 1, (size_t)m, (size_t)n, (size_t)k, 1.0f, a, (size_t)k, b, (size_t)k, 0.0f,
                       c, (size_t)n);
    return CHARRNN_OK;
}

/* ---- denormals: FTZ (bit 15) and DAZ (bit 6) of MXCSR ---- */

float_mode flush_denormals_begin(void) {
    float_mode saved = {0};
#ifdef CHARRNN_HAS_MXCSR
    saved.caller = _mm_getcsr();
#pragma omp parallel
    _mm_setcsr(_mm_getcsr() | 0x8040u);
#endif
    return saved;
}

void flush_denormals_end(float_mode saved) {
#ifdef CHARRNN_HAS_MXCSR
    unsigned int caller_flags = saved.caller & 0x8040u;
#pragma omp parallel
    _mm_setcsr((_mm_getcsr() & ~0x8040u) | caller_flags);
    _mm_setcsr(saved.caller);
#else
    (void)saved;
#endif
}
