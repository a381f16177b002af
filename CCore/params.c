/*
 * The parameter block: sizes, the tensor table (PyTorch names and layouts),
 * the activation block's layout, and initialisation.
 */
#include <stdio.h>

#include "internal.h"

#define MAX_VOCAB (1 << 21)  /* every Unicode scalar fits */
#define MAX_HIDDEN (1 << 14)
#define MAX_ROWS (1 << 26)   /* T * B; keeps every BLAS dimension far inside int32 */

charrnn_status check_config(const charrnn_config *c) {
    if (!c) return CHARRNN_ERR_NULL_POINTER;
    if (c->vocab_size < 1 || c->vocab_size > MAX_VOCAB) return CHARRNN_ERR_INVALID_CONFIG;
    if (c->hidden_size < 1 || c->hidden_size > MAX_HIDDEN) return CHARRNN_ERR_INVALID_CONFIG;
    if (c->num_layers < 1 || c->num_layers > CHARRNN_MAX_LAYERS) return CHARRNN_ERR_INVALID_CONFIG;
    return CHARRNN_OK;
}

charrnn_status check_batch_shape(int32_t batch_size, int32_t steps) {
    if (batch_size < 1 || steps < 1) return CHARRNN_ERR_INVALID_SHAPE;
    if ((int64_t)batch_size * (int64_t)steps > MAX_ROWS) return CHARRNN_ERR_INVALID_SHAPE;
    return CHARRNN_OK;
}

charrnn_status charrnn_config_validate(const charrnn_config *config) { return check_config(config); }

/* One layer's four tensors, in block order. */
static size_t layer_input_size(const charrnn_config *c, int k) {
    return k == 0 ? (size_t)c->vocab_size : (size_t)c->hidden_size;
}

size_t param_count_unchecked(const charrnn_config *c) {
    size_t H = (size_t)c->hidden_size, V = (size_t)c->vocab_size, n = 0;
    for (int k = 0; k < c->num_layers; k++) n += 4 * H * layer_input_size(c, k) + 4 * H * H + 8 * H;
    return n + V * H + V;
}

void carve_params(const charrnn_config *c, float *block, param_tensors *out) {
    size_t H = (size_t)c->hidden_size, V = (size_t)c->vocab_size;
    float *p = block;
    for (int k = 0; k < c->num_layers; k++) {
        out->weight_ih[k] = p; p += 4 * H * layer_input_size(c, k);
        out->weight_hh[k] = p; p += 4 * H * H;
        out->bias_ih[k] = p;   p += 4 * H;
        out->bias_hh[k] = p;   p += 4 * H;
    }
    out->fc_weight = p; p += V * H;
    out->fc_bias = p;
}

charrnn_status charrnn_param_count(const charrnn_config *config, size_t *count) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!count) return CHARRNN_ERR_NULL_POINTER;
    *count = param_count_unchecked(config);
    return CHARRNN_OK;
}

charrnn_status charrnn_optimizer_state_count(const charrnn_config *config, size_t *count) {
    charrnn_status s = charrnn_param_count(config, count);
    if (s == CHARRNN_OK) *count *= 2;
    return s;
}

charrnn_status charrnn_state_count(const charrnn_config *config, int32_t batch_size, size_t *count) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if ((s = check_batch_shape(batch_size, 1)) != CHARRNN_OK) return s;
    if (!count) return CHARRNN_ERR_NULL_POINTER;
    *count = 2 * (size_t)config->num_layers * (size_t)batch_size * (size_t)config->hidden_size;
    return CHARRNN_OK;
}

static size_t round_up16(size_t n) { return (n + 15) & ~(size_t)15; }

size_t carve_activations(const charrnn_config *c, size_t B, size_t T, float *block,
                         activation_tensors *out) {
    size_t H = (size_t)c->hidden_size, V = (size_t)c->vocab_size, N = T * B, off = 0;
#define TAKE(field, n)                          \
    do {                                        \
        if (block) out->field = block + off;    \
        off += round_up16(n);                   \
    } while (0)
    for (int l = 0; l < c->num_layers; l++) {
        TAKE(gates[l], N * 4 * H);
        TAKE(h[l], (T + 1) * B * H);
        TAKE(c[l], (T + 1) * B * H);
        TAKE(tanh_c[l], N * H);
        TAKE(mask[l], N * H);
        TAKE(y[l], N * H);
    }
    TAKE(probs, N * V);
    TAKE(dlogits, N * V);
    TAKE(dgates, N * 4 * H);
    TAKE(dy, N * H);
    TAKE(dh_rec, B * H);
    TAKE(dc_next, B * H);
    TAKE(embed, V * 4 * H);
#undef TAKE
    return off;
}

charrnn_status charrnn_activation_count(const charrnn_config *config, int32_t batch_size,
                                        int32_t steps, size_t *count) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if ((s = check_batch_shape(batch_size, steps)) != CHARRNN_OK) return s;
    if (!count) return CHARRNN_ERR_NULL_POINTER;
    *count = carve_activations(config, (size_t)batch_size, (size_t)steps, NULL, NULL);
    return CHARRNN_OK;
}

/* ---- the tensor table ---- */

charrnn_status charrnn_tensor_count(const charrnn_config *config, int32_t *count) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!count) return CHARRNN_ERR_NULL_POINTER;
    *count = 4 * config->num_layers + 2;
    return CHARRNN_OK;
}

charrnn_status charrnn_tensor_info_at(const charrnn_config *config, int32_t index,
                                      charrnn_tensor_info *info) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!info) return CHARRNN_ERR_NULL_POINTER;
    int32_t count = 4 * config->num_layers + 2;
    if (index < 0 || index >= count) return CHARRNN_ERR_INDEX_OUT_OF_RANGE;

    int64_t H = config->hidden_size, V = config->vocab_size;
    size_t offset = 0;
    /* Walk the block in order; the table is small, so this stays simple. */
    for (int32_t i = 0; i <= index; i++) {
        charrnn_tensor_info t;
        memset(&t, 0, sizeof t);
        int layer = i / 4;
        if (i < 4 * config->num_layers) {
            int64_t input = layer == 0 ? V : H;
            switch (i % 4) {
            case 0:
                snprintf(t.name, sizeof t.name, "lstm.weight_ih_l%d", layer);
                t.ndim = 2; t.shape[0] = 4 * H; t.shape[1] = input;
                break;
            case 1:
                snprintf(t.name, sizeof t.name, "lstm.weight_hh_l%d", layer);
                t.ndim = 2; t.shape[0] = 4 * H; t.shape[1] = H;
                break;
            case 2:
                snprintf(t.name, sizeof t.name, "lstm.bias_ih_l%d", layer);
                t.ndim = 1; t.shape[0] = 4 * H;
                break;
            default:
                snprintf(t.name, sizeof t.name, "lstm.bias_hh_l%d", layer);
                t.ndim = 1; t.shape[0] = 4 * H;
                break;
            }
        } else if (i == 4 * config->num_layers) {
            snprintf(t.name, sizeof t.name, "fc.weight");
            t.ndim = 2; t.shape[0] = V; t.shape[1] = H;
        } else {
            snprintf(t.name, sizeof t.name, "fc.bias");
            t.ndim = 1; t.shape[0] = V;
        }
        t.count = (size_t)t.shape[0] * (size_t)(t.ndim == 2 ? t.shape[1] : 1);
        t.offset = offset;
        offset += t.count;
        if (i == index) *info = t;
    }
    return CHARRNN_OK;
}

/* ---- initialisation ---- */

/* Standard normal from two uniforms (Box-Muller); draws are addressed by
 * index so the result does not depend on the order or thread of filling. */
static float normal_at(uint64_t seed, uint64_t idx) {
    float u1 = uniform_at(seed, 2 * idx), u2 = uniform_at(seed, 2 * idx + 1);
    u1 = u1 > 1e-7f ? u1 : 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

charrnn_status charrnn_init_params(const charrnn_config *config, float *params, uint64_t seed) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!params) return CHARRNN_ERR_NULL_POINTER;

    size_t H = (size_t)config->hidden_size, V = (size_t)config->vocab_size;
    param_tensors p;
    carve_params(config, params, &p);
    /* Each tensor draws from its own stream, derived from the seed and its
     * position, so adding a layer does not reshuffle the others. */
    uint64_t stream = splitmix64_mix(seed ^ 0x43686172524E4EULL);
    for (int k = 0; k < config->num_layers; k++) {
        size_t input = layer_input_size(config, k);
        float limit = sqrtf(6.0f / (float)(input + H + 4 * H));
        uint64_t s_ih = stream + 4 * (uint64_t)k + 1, s_hh = stream + 4 * (uint64_t)k + 2;
        for (size_t i = 0; i < 4 * H * input; i++)
            p.weight_ih[k][i] = limit * (2.0f * uniform_at(s_ih, i) - 1.0f);
        for (size_t i = 0; i < 4 * H * H; i++)
            p.weight_hh[k][i] = limit * (2.0f * uniform_at(s_hh, i) - 1.0f);
        memset(p.bias_ih[k], 0, 4 * H * sizeof(float));
        memset(p.bias_hh[k], 0, 4 * H * sizeof(float));
        for (size_t j = 0; j < H; j++) p.bias_ih[k][H + j] = 1.0f; /* forget gate block */
    }
    uint64_t s_fc = stream + 4 * (uint64_t)config->num_layers + 1;
    for (size_t i = 0; i < V * H; i++) {
        /* Truncated at 2 std by redrawing, as tf.truncated_normal. */
        float z = normal_at(s_fc, i);
        for (uint64_t retry = 1; fabsf(z) > 2.0f; retry++)
            z = normal_at(s_fc, i + retry * (uint64_t)(V * H));
        p.fc_weight[i] = 0.1f * z;
    }
    memset(p.fc_bias, 0, V * sizeof(float));
    return CHARRNN_OK;
}
