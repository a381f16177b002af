/*
 * Process-level set-up of the BLAS library and the OpenMP runtime, status
 * messages, and the GEMM helpers that split work across the OpenMP team.
 *
 * Any CBLAS: the core calls only cblas_sgemm and cblas_sgemv, so it links
 * against OpenBLAS, BLIS, FlexiBLAS or the reference CBLAS alike (the
 * package's CHARRNN_BLAS chooses). Which library the process actually runs
 * is found when the core is loaded, from the file that provides
 * cblas_sgemm: on Debian the linked name (libblas.so.3, say) is whichever
 * BLAS the alternatives system points at, so what was linked and what runs
 * can differ. Each library's own calls (thread count, version, kernel set)
 * are looked up in that file by name, so none is needed to link, and the
 * OpenBLAS-only fixes below run only when OpenBLAS is what runs.
 *
 * Why a load-time constructor: Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH)
 * picks its kernels in its own ELF constructor. On CPUs newer than it knows
 * (e.g. Emerald Rapids) it falls back to "Prescott" SSE3 kernels that run
 * sgemm 5-9x slower. setenv() in main() is too late; what works is
 * gotoblas_dynamic_quit(), OPENBLAS_CORETYPE, gotoblas_dynamic_init(), done
 * before any other thread calls BLAS. Our constructor runs after
 * OpenBLAS's (it is our dependency) and before main, single-threaded.
 * What it finds is the only process-wide state the core has, it is written
 * once at load time, and it is read-only afterwards.
 */
#define _GNU_SOURCE /* dladdr, sched_getaffinity */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <unistd.h>
#ifdef __linux__
#include <sched.h>
#endif

#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define CHARRNN_HAS_MXCSR 1
#endif

#include "internal.h"

/* A limit of charrnn.h as text, so the messages quote the header's numbers. */
#define LIMIT_TEXT(x) #x
#define LIMIT(x) LIMIT_TEXT(x)

const char *charrnn_status_message(charrnn_status status) {
    switch (status) {
    case CHARRNN_OK: return "ok";
    case CHARRNN_ERR_NULL_POINTER: return "a required pointer argument is NULL";
    case CHARRNN_ERR_INVALID_CONFIG:
        return "invalid model configuration: need 1 <= vocab_size <= " LIMIT(CHARRNN_MAX_VOCAB)
               ", 1 <= hidden_size <= " LIMIT(CHARRNN_MAX_HIDDEN) ", 1 <= num_layers <= " LIMIT(CHARRNN_MAX_LAYERS);
    case CHARRNN_ERR_INVALID_SHAPE:
        return "invalid batch shape: need batch_size >= 1, steps >= 1, batch_size * steps <= "
               LIMIT(CHARRNN_MAX_BATCH_ROWS) " and 1 to " LIMIT(CHARRNN_MAX_STREAMS) " sampling streams";
    case CHARRNN_ERR_TOKEN_OUT_OF_RANGE: return "an input or target token is outside [0, vocab_size)";
    case CHARRNN_ERR_INVALID_ARGUMENT: return "a scalar argument is outside its valid range";
    case CHARRNN_ERR_INDEX_OUT_OF_RANGE: return "tensor index outside [0, tensor count)";
    case CHARRNN_ERR_NON_FINITE: return "a loss, gradient norm, weight or logit is NaN or infinite";
    }
    return "unknown status code";
}

/* ---- which BLAS runs, and its set-up ---- */

typedef enum { BLAS_OTHER, BLAS_OPENBLAS, BLAS_BLIS, BLAS_FLEXIBLAS } blas_kind;

static struct {
    blas_kind kind;
    char library[64];          /* "OpenBLAS 0.3.21", "BLIS 0.9.0", … or the file's name */
    char file[192];            /* the file cblas_sgemm comes from, links resolved */
    char core[32];             /* kernel set (OpenBLAS), configuration (BLIS), backend (FlexiBLAS) */
    char config[160];          /* OpenBLAS's build configuration */
    char core_selected_by[32]; /* OpenBLAS: "library", "charrnn" or the user's variable */
    void *handle;              /* that file, for looking up its own calls */
} blas = {.kind = BLAS_OTHER, .core_selected_by = "library"};

/* Copies as much of `from` as fits, always terminated. */
static void copy_text(char *to, size_t size, const char *from) {
    size_t n = strlen(from);
    if (n >= size) n = size - 1;
    memcpy(to, from, n);
    to[n] = '\0';
}

/* One of the running BLAS's own functions, or NULL where it has none. */
static void *blas_function(const char *name) { return blas.handle ? dlsym(blas.handle, name) : NULL; }

/* The BLAS's own thread count, where it has one to tell (0: not known). */
static int blas_thread_count(void) {
    switch (blas.kind) {
    case BLAS_OPENBLAS: {
        int (*get)(void) = (int (*)(void))blas_function("openblas_get_num_threads");
        return get ? get() : 0;
    }
    case BLAS_BLIS: {
        /* dim_t is BLIS's integer, 64 bits unless built otherwise; read as
         * int, the low half is right for either width. */
        int64_t (*get)(void) = (int64_t (*)(void))blas_function("bli_thread_get_num_threads");
        return get ? (int)get() : 0;
    }
    case BLAS_FLEXIBLAS: {
        int (*get)(void) = (int (*)(void))blas_function("flexiblas_get_num_threads");
        return get ? get() : 0;
    }
    case BLAS_OTHER: break;
    }
    return 0;
}

#if defined(__x86_64__)
/* OpenBLAS kernel sets that already use AVX2/FMA or AVX-512: leave them alone. */
static int openblas_core_is_modern(const char *core) {
    static const char *modern[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"};
    if (!core) return 0;
    for (size_t i = 0; i < sizeof modern / sizeof modern[0]; i++)
        if (strcasecmp(core, modern[i]) == 0) return 1;
    return 0;
}

/* Debian's OpenBLAS 0.3.21 falls back to SSE3 kernels on x86 CPUs newer
 * than it knows; choose the kernels the CPU's features call for. Other
 * architectures' kernel choice is the library's. */
static void openblas_reselect_kernels(void) {
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (user && *user) {
        snprintf(blas.core_selected_by, sizeof blas.core_selected_by, "user (OPENBLAS_CORETYPE)");
        return;
    }
    const char *(*corename)(void) = (const char *(*)(void))blas_function("openblas_get_corename");
    if (!corename || openblas_core_is_modern(corename())) return;

    __builtin_cpu_init();
    const char *wanted = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        wanted = "SKYLAKEX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        wanted = "HASWELL";
    if (!wanted) return; /* an old CPU: the library's choice is right */

    /* Exported by DYNAMIC_ARCH builds only; absent elsewhere, then do nothing. */
    void (*dyn_quit)(void) = (void (*)(void))blas_function("gotoblas_dynamic_quit");
    void (*dyn_init)(void) = (void (*)(void))blas_function("gotoblas_dynamic_init");
    if (!dyn_quit || !dyn_init) return;
    dyn_quit();
    setenv("OPENBLAS_CORETYPE", wanted, 1);
    dyn_init();
    unsetenv("OPENBLAS_CORETYPE"); /* child processes choose for themselves */
    snprintf(blas.core_selected_by, sizeof blas.core_selected_by, "charrnn");
}
#endif

/* Two pools (the BLAS's threads and our OpenMP team) spinning on two cores
 * slow each other down badly; the core calls BLAS from inside its own
 * OpenMP regions, so each BLAS runs single-threaded. */
static void configure_openblas(void) {
    const char *(*config)(void) = (const char *(*)(void))blas_function("openblas_get_config");
    const char *text = config ? config() : NULL;
    snprintf(blas.config, sizeof blas.config, "%s", text ? text : "");
    /* The configuration starts "OpenBLAS 0.3.21 …": keep name and version. */
    const char *space = text ? strchr(text, ' ') : NULL, *end = space ? strchr(space + 1, ' ') : NULL;
    if (text)
        snprintf(blas.library, sizeof blas.library, "%.*s", end ? (int)(end - text) : (int)strlen(text), text);
    else
        snprintf(blas.library, sizeof blas.library, "OpenBLAS");

    /* With the OpenMP build of OpenBLAS (parallel == 2) setting its threads
     * would also shrink our own teams, and nested regions run
     * single-threaded anyway: skip it there. */
    int (*parallel)(void) = (int (*)(void))blas_function("openblas_get_parallel");
    void (*set_threads)(int) = (void (*)(int))blas_function("openblas_set_num_threads");
    if (parallel && set_threads && parallel() == 1) set_threads(1);
#if defined(__x86_64__)
    openblas_reselect_kernels();
#endif
    const char *(*corename)(void) = (const char *(*)(void))blas_function("openblas_get_corename");
    const char *core = corename ? corename() : NULL;
    snprintf(blas.core, sizeof blas.core, "%s", core ? core : "unknown");
}

static void configure_blis(void) {
    const char *(*version)(void) = (const char *(*)(void))blas_function("bli_info_get_version_str");
    snprintf(blas.library, sizeof blas.library, "BLIS %s", version ? version() : "");
    void (*set_threads)(int64_t) = (void (*)(int64_t))blas_function("bli_thread_set_num_threads");
    if (set_threads) set_threads(1);
    int (*arch_id)(void) = (int (*)(void))blas_function("bli_arch_query_id");
    const char *(*arch_name)(int) = (const char *(*)(int))blas_function("bli_arch_string");
    const char *arch = arch_id && arch_name ? arch_name(arch_id()) : NULL;
    snprintf(blas.core, sizeof blas.core, "%s", arch ? arch : "unknown");
}

static void configure_flexiblas(void) {
    void (*version)(int *, int *, int *) = (void (*)(int *, int *, int *))blas_function("flexiblas_get_version");
    int major = 0, minor = 0, patch = 0;
    if (version) version(&major, &minor, &patch);
    snprintf(blas.library, sizeof blas.library, "FlexiBLAS %d.%d.%d", major, minor, patch);
    void (*set_threads)(int) = (void (*)(int))blas_function("flexiblas_set_num_threads");
    if (set_threads) set_threads(1);
    int (*backend)(char *, size_t) = (int (*)(char *, size_t))blas_function("flexiblas_current_backend");
    if (!backend || backend(blas.core, sizeof blas.core) < 0) snprintf(blas.core, sizeof blas.core, "unknown");
}

__attribute__((constructor)) static void charrnn_configure_blas(void) {
    Dl_info info;
    if (dladdr((void *)cblas_sgemm, &info) && info.dli_fname) {
        char resolved[PATH_MAX];
        const char *file = realpath(info.dli_fname, resolved) ? resolved : info.dli_fname;
        copy_text(blas.file, sizeof blas.file, file);
        const char *base = strrchr(file, '/');
        copy_text(blas.library, sizeof blas.library, base ? base + 1 : file);
        /* Already loaded: this only returns a handle to look its calls up in. */
        blas.handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    }
    /* FlexiBLAS first: it forwards to a backend that may be OpenBLAS. */
    if (blas_function("flexiblas_current_backend")) {
        blas.kind = BLAS_FLEXIBLAS;
        configure_flexiblas();
    } else if (blas_function("openblas_get_config")) {
        blas.kind = BLAS_OPENBLAS;
        configure_openblas();
    } else if (blas_function("bli_info_get_version_str")) {
        blas.kind = BLAS_BLIS;
        configure_blis();
    }
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
 * OMP_WAIT_POLICY decides instead, and the core never changes it. Other
 * runtimes (GNU libgomp) have no call for it: their own defaults apply. */
/* ---- teams of a fixed size, work in fixed blocks ----
 * With OMP_DYNAMIC set, libomp shrinks a team when the machine is loaded
 * (under load, every team to one thread) without saying so: speed figures
 * then name threads that never ran, and the threads that did run may not
 * be the ones whose flush-to-zero mode the passes set. The core's teams
 * keep the size asked instead (omp_set_dynamic(0) for the calling thread's
 * teams, on every entry that runs one). The result does not depend on the
 * team's size either way: the work whose rounding depends on its partition
 * is split into work_blocks() fixed blocks (internal.h). */
static int work_block_count = 1;

/* The processors the process may run on (its CPU mask), as OpenMP counts
 * them; a build without OpenMP counts them the same way, so it cuts the
 * work, and rounds, as the OpenMP build does with any team. */
static int processors_available(void) {
#ifdef _OPENMP
    return omp_get_num_procs();
#else
#ifdef __linux__
    cpu_set_t mask;
    if (sched_getaffinity(0, sizeof mask, &mask) == 0) return CPU_COUNT(&mask);
#endif
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > INT_MAX ? INT_MAX : (int)online;
#endif
}

__attribute__((constructor)) static void charrnn_configure_blocks(void) {
    int processors = processors_available();
    work_block_count = processors < 1 ? 1 : processors > MAX_WORK_BLOCKS ? MAX_WORK_BLOCKS : processors;
}

int work_blocks(void) { return work_block_count; }

static void teams_keep_their_size(void) {
#ifdef _OPENMP
    omp_set_dynamic(0);
#endif
}

#ifdef CHARRNN_HAS_KMP_BLOCKTIME
static int wait_policy_from_user;
static int spin_blocktime_ms = 200;

__attribute__((constructor)) static void charrnn_configure_waiting(void) {
    const char *blocktime = getenv("KMP_BLOCKTIME"), *policy = getenv("OMP_WAIT_POLICY");
    wait_policy_from_user = (blocktime && *blocktime) || (policy && *policy);
    if (!wait_policy_from_user) spin_blocktime_ms = kmp_get_blocktime();
}

void threads_wait_passively(void) {
    teams_keep_their_size();
    if (!wait_policy_from_user) kmp_set_blocktime(0);
}

void threads_wait_actively(void) {
    teams_keep_their_size();
    if (!wait_policy_from_user) kmp_set_blocktime(spin_blocktime_ms);
}

static void describe_waiting(char *text, size_t size) {
    if (wait_policy_from_user)
        snprintf(text, size, "user (KMP_BLOCKTIME / OMP_WAIT_POLICY)");
    else
        snprintf(text, size, "sleep in training, spin %d ms in stepping", spin_blocktime_ms);
}
#else
void threads_wait_passively(void) { teams_keep_their_size(); }
void threads_wait_actively(void) { teams_keep_their_size(); }

static void describe_waiting(char *text, size_t size) {
#ifdef _OPENMP
    snprintf(text, size, "the runtime's own (OMP_WAIT_POLICY)");
#else
    snprintf(text, size, "none (one thread)");
#endif
}
#endif

/* The OpenMP runtime the core runs on, named by its file. */
static void describe_threading(char *text, size_t size) {
#ifdef _OPENMP
    Dl_info info;
    const char *file = dladdr((void *)omp_get_max_threads, &info) && info.dli_fname ? info.dli_fname : NULL;
    const char *base = file ? strrchr(file, '/') : NULL;
    snprintf(text, size, "OpenMP (%s)", base ? base + 1 : file ? file : "runtime not known");
#else
    snprintf(text, size, "none (built without OpenMP)");
#endif
}

void charrnn_runtime_get(charrnn_runtime *runtime) {
    if (!runtime) return;
    memset(runtime, 0, sizeof *runtime);
    snprintf(runtime->blas_library, sizeof runtime->blas_library, "%s", blas.library[0] ? blas.library : "unknown");
    snprintf(runtime->blas_file, sizeof runtime->blas_file, "%s", blas.file);
    snprintf(runtime->blas_core, sizeof runtime->blas_core, "%s", blas.core);
    snprintf(runtime->blas_config, sizeof runtime->blas_config, "%s", blas.config);
    if (blas.kind == BLAS_OPENBLAS)
        snprintf(runtime->blas_core_selected_by, sizeof runtime->blas_core_selected_by, "%s",
                 blas.core_selected_by);
    runtime->blas_threads = blas_thread_count();
    describe_threading(runtime->threading, sizeof runtime->threading);
    /* The team a region of the calling thread actually gets, as the
     * training entries set teams up. */
    int team = 1;
    teams_keep_their_size();
#pragma omp parallel
    {
        if (omp_get_thread_num() == 0) team = omp_get_num_threads();
    }
    runtime->compute_threads = team;
    runtime->work_blocks = work_blocks();
    describe_waiting(runtime->thread_waiting, sizeof runtime->thread_waiting);
    bf16_kernel_describe(runtime->bf16_kernel, sizeof runtime->bf16_kernel);
    panels_kernel_describe(runtime->recurrent_products, sizeof runtime->recurrent_products);
}

/* ---- GEMM helpers ---- */

void gemm_block(const char *name, int trans_a, int trans_b, size_t M, size_t N, size_t K,
                float alpha, const float *A, size_t lda, const float *B, size_t ldb, float beta,
                float *C, size_t ldc) {
    if (M == 0 || N == 0) return;
    double start = products_logged() ? product_clock() : -1.0;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha, A, (int)lda, B,
                (int)ldb, beta, C, (int)ldc);
    if (start >= 0.0) record_product(name, trans_a, trans_b, M, N, K, C, product_clock() - start);
}

void gemv_block(const char *name, size_t rows, size_t K, const float *W, const float *x,
                float *out) {
    if (rows == 0) return;
    double start = products_logged() ? product_clock() : -1.0;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)K, 1.0f, W, (int)K, x, 1, 1.0f, out, 1);
    if (start >= 0.0) record_product(name, 0, 1, 1, rows, K, out, product_clock() - start);
}

void gemm_rows_parallel(const char *name, int trans_a, int trans_b, size_t M, size_t N, size_t K,
                        float alpha, const float *A, size_t lda, const float *B, size_t ldb,
                        float beta, float *C, size_t ldc) {
    /* Below ~1 MFLOP a fork costs more than it saves. Either way the rows
     * are cut by the shape alone (one block, or the fixed work blocks), so
     * every call, and so every row's rounding, is the same for any team. */
    int parallel = (double)M * (double)N * (double)K > 5e5 && M >= 32;
    int blocks = parallel ? work_blocks() : 1;
#pragma omp parallel if (parallel)
    FOR_EACH_OWN_BLOCK(block, blocks) {
        size_t begin, end;
        thread_range(M, block, blocks, 16, &begin, &end);
        if (end > begin) {
            const float *A_block = trans_a ? A + begin : A + begin * lda;
            gemm_block(name, trans_a, trans_b, end - begin, N, K, alpha, A_block, lda, B, ldb,
                       beta, C + begin * ldc, ldc);
        }
    }
}

charrnn_status charrnn_gemm_nt(int32_t m, int32_t n, int32_t k, const float *a, const float *b,
                               float *c) {
    if (!a || !b || !c) return CHARRNN_ERR_NULL_POINTER;
    if (m < 1 || n < 1 || k < 1) return CHARRNN_ERR_INVALID_SHAPE;
    threads_wait_passively();
    gemm_rows_parallel("gemm_nt", 0, 1, (size_t)m, (size_t)n, (size_t)k, 1.0f, a, (size_t)k, b,
                       (size_t)k, 0.0f, c, (size_t)n);
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
