/*
 * charrnn.h — the compute core of CharRNN: a stacked character-level
 * recurrent network (LSTM, GRU or plain tanh RNN layers).
 *
 * What it is: forward and backward passes over a batch, softmax
 * cross-entropy, global-norm gradient clipping and an Adam step, all on
 * float32 buffers that the CALLER allocates and owns. The core allocates
 * nothing in its compute paths, keeps no global mutable state (two models in
 * one process never interfere), never prints and never aborts: every
 * function that can fail returns a charrnn_status.
 *
 * What it is not: it knows nothing of files, text, vocabularies or
 * checkpoints. Those live in the Swift library `CharRNN`.
 *
 * Threading. Every function is reentrant: calls on different buffers may run
 * concurrently from different threads. Calls that write the same buffer must
 * not overlap. Inside a call the core parallelises with OpenMP (one team, the
 * size of omp_get_max_threads()) and calls the BLAS single-threaded from each
 * OpenMP thread, so the two thread pools never spin against each other. A
 * core built without OpenMP runs every call on the calling thread, with the
 * arithmetic of one OpenMP thread.
 *
 * BLAS. The core calls only cblas_sgemm and cblas_sgemv, so any CBLAS serves
 * (OpenBLAS, BLIS, FlexiBLAS, the reference). When the library is loaded it
 * finds which BLAS actually runs (the file cblas_sgemm comes from) and sets
 * that BLAS to one thread where it has a call for it. Where that BLAS is
 * OpenBLAS on x86-64 and Debian's 0.3.21 mis-detects a modern CPU and falls
 * back to its oldest kernels, it re-selects the kernels matching the CPU's
 * features (SKYLAKEX for AVX-512, HASWELL for AVX2+FMA); a user's own
 * OPENBLAS_CORETYPE is never overridden.
 *
 * Waiting. With LLVM's OpenMP runtime, idle threads sleep at once in the
 * training calls (forward, backward, clipping, Adam), so that a busy
 * machine does not make two threads slower than one, and spin as libomp
 * does by default in charrnn_step, whose calls are too short to sleep
 * between; a user's KMP_BLOCKTIME or OMP_WAIT_POLICY overrides both. Other
 * OpenMP runtimes keep their own waiting.
 * charrnn_runtime_get() reports all of it.
 *
 * Shape letters used throughout:
 *   V  vocabulary size (number of distinct characters)
 *   H  hidden size of every recurrent layer
 *   L  number of stacked recurrent layers
 *   B  batch size (independent streams)
 *   T  time steps per batch (truncated back-propagation length)
 *   N  = T * B, rows of the time-major activation matrices (row r = t*B + b)
 *
 * Cells (charrnn_config.cell), each exactly PyTorch's module of that name,
 * with G gate blocks of H rows each (CHARRNN_CELL_*, charrnn_cell_info):
 *   lstm  G = 4, blocks i, f, g, o (torch.nn.LSTM):
 *           i = s(x_i + h_i), f = s(x_f + h_f), g = tanh(x_g + h_g),
 *           o = s(x_o + h_o); c' = f c + i g; h' = o tanh(c')
 *   gru   G = 3, blocks r, z, n (torch.nn.GRU):
 *           r = s(x_r + h_r), z = s(x_z + h_z), n = tanh(x_n + r h_n);
 *           h' = (1 - z) n + z h
 *   rnn   G = 1 (torch.nn.RNN, nonlinearity 'tanh'): h' = tanh(x + h)
 * where x_q = W_ih[q] x + b_ih[q] and h_q = W_hh[q] h + b_hh[q] are block q
 * of the input and recurrent terms, and s is the logistic sigmoid.
 *
 * Parameters: one contiguous float block, described by a tensor table that
 * uses PyTorch's names and layouts (row-major), in this order, with P the
 * cell's name ("lstm", "gru" or "rnn"):
 *   for k in 0..L-1:
 *     P.weight_ih_l{k}  [G*H, I_k]   I_0 = V (one-hot input), I_k = H after
 *     P.weight_hh_l{k}  [G*H, H]
 *     P.bias_ih_l{k}    [G*H]
 *     P.bias_hh_l{k}    [G*H]
 *   fc.weight           [V, H]
 *   fc.bias             [V]
 * Layer 0's input product with a one-hot vector is done as a column lookup.
 * Gradients use exactly the same layout. Optimizer state is two such blocks,
 * Adam's first moments then second moments. A file whose data is this block
 * (a checkpoint written by CharRNN: see docs/CHECKPOINT.md) can be mapped
 * and used in place.
 *
 * Recurrent state: one block of C*L*B*H floats, with C the cell's state
 * tensors per layer (charrnn_cell_info_get: state_tensors): all layers' h
 * ([L, B, H]), then, for the LSTM (C = 2), all layers' c ([L, B, H]).
 *
 * Batches: inputs and targets are int32 [B, T] row-major (row b is stream b,
 * as in the original notebook's get_batch), each value in [0, V).
 *
 * Usage (error handling elided):
 *
 *   charrnn_config cfg = { .vocab_size = 83, .hidden_size = 512, .num_layers = 2,
 *                          .cell = CHARRNN_CELL_LSTM };   // or CHARRNN_CELL_GRU, _RNN
 *   size_t np, ns, na;
 *   charrnn_param_count(&cfg, &np);
 *   charrnn_state_count(&cfg, B, &ns);
 *   charrnn_activation_count(&cfg, B, T, &na);
 *   float *params = malloc(np * 4), *grads = malloc(np * 4);
 *   float *adam = calloc(2 * np, 4), *state = calloc(ns, 4), *acts = malloc(na * 4);
 *   charrnn_init_params(&cfg, params, 42);
 *   charrnn_batch batch = { .batch_size = B, .steps = T, .inputs = inputs, .targets = targets };
 *   for (int64_t step = 1; ; step++) {
 *       float loss, norm;
 *       charrnn_forward(&cfg, params, &batch, 0.5f, step, state, state, acts, &loss);
 *       memset(grads, 0, np * 4);
 *       charrnn_backward(&cfg, params, &batch, acts, grads);
 *       charrnn_clip_grad_norm(&cfg, grads, 5.0f, &norm);
 *       charrnn_adam_params adam_params = charrnn_adam_default_params();
 *       charrnn_adam_update(&cfg, params, grads, adam, step, &adam_params);
 *   }
 *
 *   // Sampling, one stream: feed a character, draw the next, feed it back.
 *   size_t nss, nsc, nsb;
 *   charrnn_state_count(&cfg, 1, &nss);
 *   charrnn_step_scratch_count(&cfg, 1, &nsc);
 *   charrnn_sample_scratch_size(cfg.vocab_size, &nsb);
 *   float *h = calloc(nss, 4), *scratch = malloc(nsc * 4), *logits = malloc(cfg.vocab_size * 4);
 *   void *sample_scratch = malloc(nsb);
 *   charrnn_rng rng;
 *   charrnn_rng_seed(&rng, 1);
 *   charrnn_sampling_params sp = charrnn_sampling_default_params();
 *   sp.top_k = 5;
 *   int32_t token = first_character;
 *   for (int i = 0; i < 1000; i++) {
 *       charrnn_step(&cfg, params, 1, &token, h, scratch, logits);
 *       charrnn_sample(logits, cfg.vocab_size, &sp, &rng, sample_scratch, NULL, &token);
 *       emit(token);
 *   }
 *
 * Tools/c-example/example.c is a complete program.
 */
#ifndef CHARRNN_H
#define CHARRNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CHARRNN_VERSION_MAJOR 0
#define CHARRNN_VERSION_MINOR 5
#define CHARRNN_VERSION_PATCH 0

/* ---------------------------------------------------------------------------
 * Status codes. On any non-OK status, no output buffer has been written
 * (arguments are checked before any work starts), except where stated.
 */
typedef enum charrnn_status {
    CHARRNN_OK = 0,
    CHARRNN_ERR_NULL_POINTER = 1,      /* a required pointer argument is NULL */
    CHARRNN_ERR_INVALID_CONFIG = 2,    /* V, H or L is zero, negative or too large */
    CHARRNN_ERR_INVALID_SHAPE = 3,     /* batch size or steps zero, negative or too large */
    CHARRNN_ERR_TOKEN_OUT_OF_RANGE = 4,/* an input or target is outside [0, V) */
    CHARRNN_ERR_INVALID_ARGUMENT = 5,  /* a scalar argument is out of its range (keep_prob, learning rate, ...) */
    CHARRNN_ERR_INDEX_OUT_OF_RANGE = 6,/* a tensor index outside [0, tensor count) */
    CHARRNN_ERR_NON_FINITE = 7         /* a loss, gradient norm, weight or logit came out NaN or infinite */
} charrnn_status;

/* A static, human-readable message for a status code (never NULL). */
const char *charrnn_status_message(charrnn_status status);

/* ---------------------------------------------------------------------------
 * Cells.
 */
typedef enum charrnn_cell {
    CHARRNN_CELL_LSTM = 0, /* the default: a zeroed config is an LSTM */
    CHARRNN_CELL_GRU = 1,
    CHARRNN_CELL_RNN = 2
} charrnn_cell;

#define CHARRNN_CELL_COUNT 3

typedef struct charrnn_cell_info {
    const char *name;      /* "lstm", "gru" or "rnn": the tensor-name prefix */
    int32_t gates;         /* G: gate blocks of H rows (4, 3, 1) */
    int32_t state_tensors; /* C: recurrent state tensors per layer (2: h, c; 1: h) */
} charrnn_cell_info;

/* Facts of a cell; CHARRNN_ERR_INVALID_CONFIG for an unknown cell. */
charrnn_status charrnn_cell_info_get(int32_t cell, charrnn_cell_info *info);
/* The cell whose name is `name` ("lstm", "gru", "rnn");
 * CHARRNN_ERR_INVALID_CONFIG for any other name. */
charrnn_status charrnn_cell_from_name(const char *name, int32_t *cell);

/* ---------------------------------------------------------------------------
 * Configuration and sizes. All counts are in floats (multiply by 4 for bytes).
 * Limits: 1 <= V <= CHARRNN_MAX_VOCAB, 1 <= H <= CHARRNN_MAX_HIDDEN,
 * 1 <= L <= CHARRNN_MAX_LAYERS, cell one of charrnn_cell; 1 <= B, T and
 * T * B <= CHARRNN_MAX_BATCH_ROWS; sampling steps 1 <= S <= CHARRNN_MAX_STREAMS.
 * These are the only statement of the limits: the Swift library, the CLI's
 * help and the server ask for them here.
 */
#define CHARRNN_MAX_VOCAB 2097152      /* 2^21: every Unicode scalar fits */
#define CHARRNN_MAX_HIDDEN 16384       /* 2^14 */
#define CHARRNN_MAX_LAYERS 64
#define CHARRNN_MAX_BATCH_ROWS 67108864 /* 2^26 = T * B: every BLAS dimension stays far inside int32 */
#define CHARRNN_MAX_STREAMS 1048576    /* 2^20 streams stepped together */
typedef struct charrnn_config {
    int32_t vocab_size;   /* V */
    int32_t hidden_size;  /* H */
    int32_t num_layers;   /* L */
    int32_t cell;         /* a charrnn_cell; 0 (zero-initialised) is the LSTM */
} charrnn_config;

charrnn_status charrnn_config_validate(const charrnn_config *config);

/* Floats in the parameter block; the gradient block has the same count. */
charrnn_status charrnn_param_count(const charrnn_config *config, size_t *count);
/* Floats of Adam state: 2 * param count (first moments, then second). */
charrnn_status charrnn_optimizer_state_count(const charrnn_config *config, size_t *count);
/* Floats of recurrent state for B streams: C * L * B * H (C state tensors
 * per layer: 2 for the LSTM, 1 for the GRU and the RNN). */
charrnn_status charrnn_state_count(const charrnn_config *config, int32_t batch_size, size_t *count);
/* Floats of activation memory that charrnn_forward fills and
 * charrnn_backward reads (and uses as scratch) for a B x T batch. */
charrnn_status charrnn_activation_count(const charrnn_config *config, int32_t batch_size,
                                        int32_t steps, size_t *count);

/* ---------------------------------------------------------------------------
 * The tensor table: name, shape and offset of every tensor of the
 * parameter block, in block order (see the top of this file).
 */
#define CHARRNN_TENSOR_NAME_MAX 32
typedef struct charrnn_tensor_info {
    char name[CHARRNN_TENSOR_NAME_MAX]; /* NUL-terminated, e.g. "gru.weight_ih_l0" */
    int32_t ndim;                       /* 1 or 2 */
    int64_t shape[2];                   /* shape[1] is 0 when ndim == 1 */
    size_t offset;                      /* in floats from the start of the block */
    size_t count;                       /* floats in the tensor */
} charrnn_tensor_info;

/* Number of tensors: 4 * L + 2. */
charrnn_status charrnn_tensor_count(const charrnn_config *config, int32_t *count);
charrnn_status charrnn_tensor_info_at(const charrnn_config *config, int32_t index,
                                      charrnn_tensor_info *info);

/* ---------------------------------------------------------------------------
 * Initialisation, in the spirit of the original TensorFlow notebook:
 *   recurrent weights, every cell: Glorot-uniform, limit
 *     sqrt(6 / (I_k + H + G*H)) — TF 1.x's default for its cells' fused
 *     [I_k + H, G*H] kernel, applied to both W_ih and W_hh with that fused
 *     kernel's fan-in and fan-out;
 *   recurrent biases: zero, except the LSTM's bias_ih forget block = 1.0
 *     (BasicLSTMCell's forget_bias, which TF adds at run time and we store
 *     in the bias). The GRU's are all zero: at the notebook's settings
 *     (2 x 512, batch 100 x 100, keep 0.5, Adam 0.001) its validation loss
 *     after 100, 200 and 300 iterations was 2.231, 1.966, 1.778 with zero
 *     biases against 2.366, 2.043, 1.831 with TF 1.x GRUCell's 1.0 on the
 *     r and z blocks, which holds the state longer but learns more slowly
 *     here. The RNN's are zero, as TF's BasicRNNCell, and its weights get
 *     the Glorot limit too (0.0625 above layer 0 at H = 512): at the same
 *     settings it gave 2.198, 2.110, 2.080 against 2.222, 2.118, 2.087
 *     with PyTorch's smaller uniform limit 1/sqrt(H) (0.044).
 *   fc.weight: normal, std 0.1, truncated at 2 std (tf.truncated_normal);
 *   fc.bias: zero.
 * Deterministic for a given seed, independent of thread count.
 */
charrnn_status charrnn_init_params(const charrnn_config *config, float *params, uint64_t seed);

/* ---------------------------------------------------------------------------
 * Forward and backward over a batch.
 */
typedef struct charrnn_batch {
    int32_t batch_size;     /* B */
    int32_t steps;          /* T */
    const int32_t *inputs;  /* [B, T], values in [0, V) */
    const int32_t *targets; /* [B, T], values in [0, V) */
    /* Where these B streams sit in a larger batch that several processes
     * share (data-parallel training): row r here is stream first_stream + r
     * of total_streams. Only dropout reads them, so each stream draws the
     * masks it would draw in the whole batch. Zero for both (what an
     * initialiser that leaves them out gives) means this is the whole
     * batch. Otherwise 0 <= first_stream and
     * first_stream + batch_size <= total_streams (else CHARRNN_ERR_INVALID_ARGUMENT). */
    int32_t first_stream;
    int32_t total_streams;
} charrnn_batch;

/*
 * Runs the model over the batch and returns the mean softmax cross-entropy
 * (natural log) over all B * T predictions in *loss.
 *
 * keep_prob in (0, 1]: inverted dropout on every layer's output (the
 *   recurrent state itself is not dropped, as TF's DropoutWrapper with
 *   output_keep_prob). 1 disables dropout.
 * dropout_seed: the masks are a pure function of (seed, layer, row r, unit j):
 *   with S = total_streams (B if 0), N = T * S, r = t * S + first_stream + b
 *   for stream b's step t, idx = (layer * N + r) * H + j and
 *   z = splitmix64_mix(seed + 0x9E3779B97F4A7C15 * (idx + 1)),
 *   unit kept iff (z >> 40) * 2^-24 < keep_prob, kept values scaled by
 *   1 / keep_prob. (splitmix64_mix: z ^= z >> 30; z *= 0xBF58476D1CE4E5B9;
 *   z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31.) Same seed, same
 *   masks, whatever the thread count.
 * state_in: [C, L, B, H] initial state (h, then the LSTM's c), or NULL for
 *   zeros.
 * state_out: receives the final state; may be NULL; may equal state_in.
 * activations: charrnn_activation_count() floats, filled for backward.
 * Never fails on finite input except for argument errors; *loss may be
 * non-finite if the parameters are.
 */
charrnn_status charrnn_forward(const charrnn_config *config, const float *params,
                               const charrnn_batch *batch, float keep_prob,
                               uint64_t dropout_seed, const float *state_in,
                               float *state_out, float *activations, float *loss);

/*
 * Back-propagation through the T steps of the batch last given to
 * charrnn_forward with these activations (same params, same batch).
 * ACCUMULATES (+=) the gradient of the mean loss into grads, so the caller
 * zeroes grads once per update (and may accumulate several batches).
 * The gradient does not flow into state_in (truncated BPTT).
 * Uses the backward scratch part of activations; the forward part is left
 * unchanged, so backward may be called again with the same result.
 */
charrnn_status charrnn_backward(const charrnn_config *config, const float *params,
                                const charrnn_batch *batch, float *activations,
                                float *grads);

/* ---------------------------------------------------------------------------
 * Optimisation.
 */

/* Global L2 norm of a gradient block (accumulated in double). */
charrnn_status charrnn_grad_norm(const charrnn_config *config, const float *grads, float *norm);

/* As tf.clip_by_global_norm: if the norm exceeds max_norm, scales grads by
 * max_norm / norm. *norm_before (may be NULL) receives the norm before
 * clipping. Returns CHARRNN_ERR_NON_FINITE (grads untouched) if the norm is
 * NaN or infinite. max_norm must be > 0. */
charrnn_status charrnn_clip_grad_norm(const charrnn_config *config, float *grads, float max_norm,
                                      float *norm_before);

typedef struct charrnn_adam_params {
    float learning_rate; /* >= 0 (a schedule may reach 0); default 0.001 */
    float beta1;         /* [0, 1); default 0.9 */
    float beta2;         /* [0, 1); default 0.999 */
    float epsilon;       /* > 0; default 1e-8 */
} charrnn_adam_params;

charrnn_adam_params charrnn_adam_default_params(void);

/* One Adam step, exactly as TensorFlow's AdamOptimizer:
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
 *   lr_t = lr * sqrt(1 - b2^step) / (1 - b1^step)
 *   p -= lr_t * m / (sqrt(v) + eps)
 * step counts from 1. optimizer_state: 2 * param count floats, zero before
 * the first step. params, grads and optimizer_state must not overlap.
 * Returns CHARRNN_ERR_NON_FINITE when the step has made a parameter NaN or
 * infinite (a learning rate far too large): the update has then been
 * applied, so the weights are no longer usable; restore them from a
 * checkpoint. Argument errors are reported before anything is touched. */
charrnn_status charrnn_adam_update(const charrnn_config *config, float *params, const float *grads,
                                   float *optimizer_state, int64_t step,
                                   const charrnn_adam_params *adam);

/* ---------------------------------------------------------------------------
 * Inference: one character at a time, for S independent streams.
 * No dropout and no activation cache; the state goes in and comes out.
 */

/* Floats of scratch memory charrnn_step needs for S streams (gates, the
 * new state and the cell's intermediate values; a few times L*S*G*H). */
charrnn_status charrnn_step_scratch_count(const charrnn_config *config, int32_t streams,
                                          size_t *count);

/*
 * Feeds one token per stream and advances the state one step.
 * tokens: [S], values in [0, V).
 * state:  [C, L, S, H] (all h, then for the LSTM all c;
 *         charrnn_state_count(config, S)), updated in place. Zero it to
 *         start a stream from scratch.
 * scratch: charrnn_step_scratch_count() floats.
 * logits: [S, V] receives the unnormalised next-character scores.
 * At S = 1 the products are matrix-vector products split across the
 * OpenMP team; at S > 1 they are matrix-matrix products.
 * Reading what the model does (what `charrnn trace` records): after a call,
 * unit j of layer l of stream s is h = state[(l*S + s)*H + j] and, for the
 * LSTM, c = state[((L + l)*S + s)*H + j]; the character fed next has
 * probability softmax(logits[s*V ..])[token] under the model.
 */
charrnn_status charrnn_step(const charrnn_config *config, const float *params, int32_t streams,
                            const int32_t *tokens, float *state, float *scratch, float *logits);

/* Floats of scratch charrnn_prime needs to feed up to `steps` characters in
 * one call (about steps * (gates + 1) * H, plus a few rows). */
charrnn_status charrnn_prime_scratch_count(const charrnn_config *config, int32_t steps,
                                           size_t *count);

/*
 * Feeds a run of known characters (a prime) to one stream: the state it
 * leaves is the state charrnn_step leaves after the same tokens one at a
 * time, computed faster: each layer's input products for all `steps`
 * characters in one product, the recurrence of each layer through all of
 * them before the next layer, and no output layer until the last.
 * tokens: [steps], values in [0, V); 1 <= steps, and the scratch was
 *   counted for at least `steps` (charrnn_prime_scratch_count).
 * state:  [C, L, 1, H] (charrnn_state_count(config, 1)), updated in place.
 * logits: [V] receives the scores for the character after the last token,
 *   or NULL to skip the output layer (a prime fed in pieces).
 * Rounding: layer 0 rounds exactly as charrnn_step; above it the input
 * products are summed in a fixed order of the core's own, so the state
 * differs from charrnn_step's in the last bits, but not by how a prime is
 * cut: feeding tokens [0, n) then [n, T) gives the same bits as [0, T) in
 * one call, whatever the thread count. charrnn sample, the Swift library,
 * the server and the C example all feed primes through here, so they agree.
 */
charrnn_status charrnn_prime(const charrnn_config *config, const float *params, int32_t steps,
                             const int32_t *tokens, float *state, float *scratch, float *logits);

/* ---------------------------------------------------------------------------
 * bfloat16 products. Inference: the step and the prime with their matrix products in
 * bf16 (weights packed once, each product's inputs rounded to bf16 as it
 * is made, sums in fp32). Everything else stays fp32: the state, biases,
 * gates, logits and the parameter block itself. Reading half the bytes,
 * one stream samples and primes faster where the CPU multiplies bf16
 * natively (AVX512_BF16); elsewhere a portable kernel gives the same bits,
 * far more slowly. The text differs from fp32's (the scores move by about
 * 1e-2), so a checkpoint's texts for a seed are the fp32 ones unless bf16
 * is asked for.
 */
typedef enum charrnn_bf16_kernel_kind {
    CHARRNN_BF16_PORTABLE = 0, /* portable C (fmaf): the same bits, several times slower than fp32 */
    CHARRNN_BF16_AVX512 = 1    /* AVX512_BF16's vdpbf16ps */
} charrnn_bf16_kernel_kind;

/* The kernel the bf16 calls run on, chosen when the core is loaded: AVX512
 * where the CPU has AVX512_BF16, unless the environment variable
 * CHARRNN_BF16 is "portable"; otherwise portable. charrnn_runtime_get
 * says which, and why. */
int32_t charrnn_bf16_kernel(void);

/* uint16 values of the packed bf16 weights of a configuration (about half
 * the parameter count: every weight matrix a product reads). */
charrnn_status charrnn_bf16_weights_count(const charrnn_config *config, size_t *count);

/* Rounds params' weight matrices to bf16 (to nearest even) into weights,
 * in the layout the kernels read. Pack again after params change. */
charrnn_status charrnn_bf16_pack(const charrnn_config *config, const float *params,
                                 uint16_t *weights);

/* charrnn_step with the products in bf16: same arguments and scratch
 * (charrnn_step_scratch_count), plus the packed weights of params. */
charrnn_status charrnn_step_bf16(const charrnn_config *config, const float *params,
                                 const uint16_t *weights, int32_t streams, const int32_t *tokens,
                                 float *state, float *scratch, float *logits);

/* charrnn_prime with the products in bf16 (charrnn_prime_scratch_count).
 * A bf16 prime leaves exactly the state and scores of charrnn_step_bf16
 * fed the same tokens one at a time, in every layer, however it is cut. */
charrnn_status charrnn_prime_bf16(const charrnn_config *config, const float *params,
                                  const uint16_t *weights, int32_t steps, const int32_t *tokens,
                                  float *state, float *scratch, float *logits);

/* Training with bf16 products: charrnn_forward and charrnn_backward with
 * every matrix product's inputs (weights, activations and gradients alike)
 * rounded to bf16 as the product is made, and its sums in fp32, on the same
 * kernels as the bf16 step. Everything else stays fp32: the parameters
 * (the master weights, packed afresh in each pass, so no packed copy goes
 * stale), the gate arithmetic, the state, the loss, the gradients and
 * what charrnn_clip_grad_norm and charrnn_adam_update do with them. A
 * product's bits depend on nothing but its inputs, so the result is the
 * same for any thread count. The activations are charrnn_activation_count_bf16
 * floats (the fp32 block and room for the packed products' inputs);
 * forward and backward must both be the bf16 ones. */
charrnn_status charrnn_activation_count_bf16(const charrnn_config *config, int32_t batch_size,
                                             int32_t steps, size_t *count);
charrnn_status charrnn_forward_bf16(const charrnn_config *config, const float *params,
                                    const charrnn_batch *batch, float keep_prob,
                                    uint64_t dropout_seed, const float *state_in,
                                    float *state_out, float *activations, float *loss);
charrnn_status charrnn_backward_bf16(const charrnn_config *config, const float *params,
                                     const charrnn_batch *batch, float *activations,
                                     float *grads);

/* A random generator whose whole state lives in caller memory
 * (xoshiro256**). Seed it with charrnn_rng_seed; copy it to fork a stream. */
typedef struct charrnn_rng {
    uint64_t s[4];
} charrnn_rng;

charrnn_status charrnn_rng_seed(charrnn_rng *rng, uint64_t seed);
/* A uniform double in [0, 1) with 53 random bits; advances the generator. */
charrnn_status charrnn_rng_uniform(charrnn_rng *rng, double *value);

typedef struct charrnn_sampling_params {
    float temperature; /* >= 0; default 1. 0 means greedy */
    int32_t top_k;     /* 0 (default) keeps all; else keep the k most likely, 1 <= k <= V */
    float top_p;       /* (0, 1]; default 1 keeps all; else the smallest set of most likely
                          characters whose probability reaches top_p (nucleus) */
    int32_t greedy;    /* non-zero: always the most likely character (ties: lowest index) */
} charrnn_sampling_params;

charrnn_sampling_params charrnn_sampling_default_params(void);

/* Bytes of scratch charrnn_sample needs for a vocabulary of V: 8 * V. */
charrnn_status charrnn_sample_scratch_size(int32_t vocab_size, size_t *bytes);

/*
 * Draws one token from logits [V] (one stream):
 *   greedy or temperature 0: the argmax, no random draw;
 *   otherwise softmax(logits / temperature), cut to the top_k most likely
 *   and then to the top_p nucleus (most likely first, ties by lower index),
 *   renormalised, and drawn with one uniform from rng.
 * Deterministic: same logits, params and rng state give the same token.
 * scratch: charrnn_sample_scratch_size() bytes (any alignment of 4).
 * probs (may be NULL): receives the final distribution over all V tokens
 *   (zero outside the kept set), for callers that want to inspect it.
 */
charrnn_status charrnn_sample(const float *logits, int32_t vocab_size,
                              const charrnn_sampling_params *params, charrnn_rng *rng,
                              void *scratch, float *probs, int32_t *token);

/* ---------------------------------------------------------------------------
 * Measurement.
 */

/* C[M, N] = A[M, K] B[N, K]^T (row-major), split by rows across the OpenMP
 * team exactly as the core's big products are: for measuring the machine's
 * matrix-product rate at a given shape. */
charrnn_status charrnn_gemm_nt(int32_t m, int32_t n, int32_t k, const float *a, const float *b,
                               float *c);

/* Sets the number of OpenMP threads later calls from the calling thread use
 * (>= 1), e.g. to compare one thread with two. A core built without OpenMP
 * runs one thread: it accepts 1 and refuses more with
 * CHARRNN_ERR_INVALID_ARGUMENT. */
charrnn_status charrnn_set_compute_threads(int32_t threads);

/* ---------------------------------------------------------------------------
 * Runtime facts, for reporting alongside any speed figure.
 */
typedef struct charrnn_runtime {
    char blas_library[64];     /* the BLAS that runs, e.g. "OpenBLAS 0.3.21", "BLIS 0.9.0",
                                  "FlexiBLAS 3.4.5", or its file's name ("libblas.so.3.11.0") */
    char blas_file[192];       /* the file cblas_sgemm comes from, links resolved */
    char blas_core[32];        /* kernels: OpenBLAS's set ("SkylakeX"), BLIS's configuration
                                  ("zen3"), FlexiBLAS's backend; "" for others */
    char blas_config[160];     /* OpenBLAS: openblas_get_config(); "" for others */
    char blas_core_selected_by[32]; /* OpenBLAS: "library", "charrnn", or "user (OPENBLAS_CORETYPE)" */
    int32_t blas_threads;      /* the BLAS's own thread count (1 under charrnn); 0: it does not say */
    char threading[64];        /* "OpenMP (libomp.so.5)", or "none (built without OpenMP)" */
    int32_t compute_threads;   /* threads a team of the calling thread has (1 without OpenMP) */
    char thread_waiting[48];   /* how idle threads wait: charrnn's choice, the user's, the runtime's */
    int32_t work_blocks;       /* the fixed blocks training's work is split into, whatever the
                                  team: the processors the process could use when loaded */
    char bf16_kernel[64];      /* the bf16 calls' kernel: "AVX512_BF16", or "portable (why)" */
    char recurrent_products[64]; /* the recurrent products' kernel: "packed AVX-512", "packed AVX2", or
                                    "BLAS (why)" (charrnn_measure.h) */
} charrnn_runtime;

void charrnn_runtime_get(charrnn_runtime *runtime);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_H */
