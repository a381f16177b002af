/*
 * The parameter block: sizes, the tensor table (PyTorch names and layouts),
 * the activation block's layout, and initialisation.
 */
#include <stdio.h>

#include "internal.h"


charrnn_status check_config(const charrnn_config *c) {
    if (!c) return CHARRNN_ERR_NULL_POINTER;
    if (c->vocab_size < 1 || c->vocab_size > CHARRNN_MAX_VOCAB) return CHARRNN_ERR_INVALID_CONFIG;
    if (c->hidden_size < 1 || c->hidden_size > CHARRNN_MAX_HIDDEN) return CHARRNN_ERR_INVALID_CONFIG;
    if (c->num_layers < 1 || c->num_layers > CHARRNN_MAX_LAYERS) return CHARRNN_ERR_INVALID_CONFIG;
    if (c->cell < 0 || c->cell >= CHARRNN_CELL_COUNT) return CHARRNN_ERR_INVALID_CONFIG;
    return CHARRNN_OK;
}

charrnn_status check_batch_shape(int32_t batch_size, int32_t steps) {
    if (batch_size < 1 || steps < 1) return CHARRNN_ERR_INVALID_SHAPE;
    if ((int64_t)batch_size * (int64_t)steps > CHARRNN_MAX_BATCH_ROWS) return CHARRNN_ERR_INVALID_SHAPE;
    return CHARRNN_OK;
}

charrnn_status charrnn_config_validate(const charrnn_config *config) { return check_config(config); }

static size_t layer_input_size(const charrnn_config *c, int k) {
    return k == 0 ? (size_t)c->vocab_size : (size_t)c->hidden_size;
}

/* ---- the layout, written once ----
 * Tensor i of the parameter block: each layer's W_ih, W_hh, b_ih, b_hh, then
 * fc.weight and fc.bias. Counting, carving and the tensor table all walk
 * this. */
enum { LAYER_TENSORS = 4 };
typedef enum { WEIGHT_IH, WEIGHT_HH, BIAS_IH, BIAS_HH, FC_WEIGHT, FC_BIAS } tensor_role;

typedef struct {
    tensor_role role;
    int layer;
    size_t rows, cols; /* cols 0 for a vector */
} layout_entry;

static int32_t layout_size(const charrnn_config *c) { return LAYER_TENSORS * c->num_layers + 2; }

static layout_entry layout_at(const charrnn_config *c, int32_t i) {
    size_t H = (size_t)c->hidden_size, V = (size_t)c->vocab_size;
    size_t GH = (size_t)cell_of(c)->gates * H;
    layout_entry e = {FC_WEIGHT, 0, V, H};
    if (i == layout_size(c) - 1) {
        e.role = FC_BIAS; e.cols = 0;
    } else if (i < layout_size(c) - 2) {
        e.layer = i / LAYER_TENSORS;
        e.role = (tensor_role)(i % LAYER_TENSORS);
        e.rows = GH;
        e.cols = e.role == WEIGHT_IH ? layer_input_size(c, e.layer) : e.role == WEIGHT_HH ? H : 0;
    }
    return e;
}

static size_t entry_count(layout_entry e) { return e.rows * (e.cols ? e.cols : 1); }

/* Where carve_params puts tensor e's pointer. */
static float **entry_slot(param_tensors *p, layout_entry e) {
    switch (e.role) {
    case WEIGHT_IH: return &p->weight_ih[e.layer];
    case WEIGHT_HH: return &p->weight_hh[e.layer];
    case BIAS_IH: return &p->bias_ih[e.layer];
    case BIAS_HH: return &p->bias_hh[e.layer];
    case FC_WEIGHT: return &p->fc_weight;
    default: return &p->fc_bias;
    }
}

size_t param_count_unchecked(const charrnn_config *c) {
    size_t n = 0;
    for (int32_t i = 0; i < layout_size(c); i++) n += entry_count(layout_at(c, i));
    return n;
}

void carve_params(const charrnn_config *c, float *block, param_tensors *out) {
    size_t offset = 0;
    for (int32_t i = 0; i < layout_size(c); i++) {
        layout_entry e = layout_at(c, i);
        *entry_slot(out, e) = block + offset;
        offset += entry_count(e);
    }
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
    *count = (size_t)cell_of(config)->states * (size_t)config->num_layers * (size_t)batch_size *
             (size_t)config->hidden_size;
    return CHARRNN_OK;
}

static size_t round_up16(size_t n) { return (n + 15) & ~(size_t)15; }

/* The uint16 room of a bf16 pass's products (the activation block's
 * bf16_room): the largest of every product's and the recurrence's. */
static size_t bf16_room_count(const charrnn_config *c, size_t B, size_t T) {
    const cell_kind *cell = cell_of(c);
    size_t H = (size_t)c->hidden_size, V = (size_t)c->vocab_size, N = T * B;
    size_t GH = (size_t)cell->gates * H, SH = (size_t)cell->split * H, FH = GH - SH;
    size_t widest = H > FH ? H : FH;
    size_t recurrent_forward = bf16_packed_count(GH, H);
    size_t recurrent_backward = bf16_packed_count(H, FH) + (SH ? bf16_packed_count(H, SH) : 0);
    size_t rooms[] = {
        (recurrent_forward > recurrent_backward ? recurrent_forward : recurrent_backward) +
            B * 2 * ((widest + 1) / 2),
        bf16_product_room(N, V, H),  /* logits */
        bf16_product_room(V, H, N),  /* dW_fc */
        bf16_product_room(N, H, V),  /* dY from logits */
        bf16_product_room(FH, H, N), /* dW_hh (the split blocks' is smaller) */
        c->num_layers > 1 ? bf16_product_room(N, GH, H) : 0, /* input projection */
        c->num_layers > 1 ? bf16_product_room(GH, H, N) : 0, /* dW_ih */
        c->num_layers > 1 ? bf16_product_room(N, H, GH) : 0, /* dY from gates */
    };
    size_t room = 0;
    for (size_t i = 0; i < sizeof rooms / sizeof rooms[0]; i++) room = rooms[i] > room ? rooms[i] : room;
    return room;
}

size_t carve_activations(const charrnn_config *c, size_t B, size_t T, int bf16, float *block,
                         activation_tensors *out) {
    const cell_kind *cell = cell_of(c);
    size_t H = (size_t)c->hidden_size, V = (size_t)c->vocab_size, N = T * B, off = 0;
    size_t GH = (size_t)cell->gates * H, SH = (size_t)cell->split * H;
    size_t has_c = cell->states > 1, has_aux = (size_t)cell->has_aux;
#define TAKE(field, n)                                  \
    do {                                                \
        if (block) out->field = (n) != 0 ? block + off : NULL; \
        off += round_up16(n);                           \
    } while (0)
    for (int l = 0; l < c->num_layers; l++) {
        TAKE(gates[l], N * GH);
        TAKE(h[l], (T + 1) * B * H);
        TAKE(c[l], has_c * (T + 1) * B * H);
        TAKE(aux[l], has_aux * N * H);
        TAKE(mask[l], N * H);
        TAKE(y[l], N * H);
    }
    TAKE(probs, N * V);
    TAKE(dlogits, N * V);
    TAKE(dgates, N * GH);
    TAKE(dsplit, N * SH);
    TAKE(dy, N * H);
    TAKE(dh_rec, B * H);
    TAKE(dc_next, has_c * B * H);
    TAKE(embed, V * GH);
    TAKE(rec, B * SH);
    /* W_hh packed for the recurrent products of one layer, forward (the
     * folded and the split blocks) or backward: one region, reused */
    size_t FH = GH - SH, forward_panels = panel_count(FH, H) + (SH ? panel_count(SH, H) : 0);
    size_t backward_panels = panel_count(H, GH);
    int packed = !bf16 && charrnn_panels_kernel() != CHARRNN_PANELS_BLAS;
    TAKE(panels, packed ? (forward_panels > backward_panels ? forward_panels : backward_panels) : 0);
    /* two bf16 values to a float */
    size_t room = bf16 ? (bf16_room_count(c, B, T) + 1) / 2 : 0;
    if (block) out->bf16_room = room ? (uint16_t *)(block + off) : NULL;
    off += round_up16(room);
#undef TAKE
    return off;
}

static charrnn_status activation_count(const charrnn_config *config, int32_t batch_size,
                                       int32_t steps, int bf16, size_t *count) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if ((s = check_batch_shape(batch_size, steps)) != CHARRNN_OK) return s;
    if (!count) return CHARRNN_ERR_NULL_POINTER;
    *count = carve_activations(config, (size_t)batch_size, (size_t)steps, bf16, NULL, NULL);
    return CHARRNN_OK;
}

charrnn_status charrnn_activation_count(const charrnn_config *config, int32_t batch_size,
                                        int32_t steps, size_t *count) {
    return activation_count(config, batch_size, steps, 0, count);
}

charrnn_status charrnn_activation_count_bf16(const charrnn_config *config, int32_t batch_size,
                                             int32_t steps, size_t *count) {
    return activation_count(config, batch_size, steps, 1, count);
}

/* ---- the tensor table ---- */

charrnn_status charrnn_tensor_count(const charrnn_config *config, int32_t *count) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!count) return CHARRNN_ERR_NULL_POINTER;
    *count = layout_size(config);
    return CHARRNN_OK;
}

charrnn_status charrnn_tensor_info_at(const charrnn_config *config, int32_t index,
                                      charrnn_tensor_info *info) {
    charrnn_status s = check_config(config);
    if (s != CHARRNN_OK) return s;
    if (!info) return CHARRNN_ERR_NULL_POINTER;
    if (index < 0 || index >= layout_size(config)) return CHARRNN_ERR_INDEX_OUT_OF_RANGE;

    size_t offset = 0;
    for (int32_t i = 0; i < index; i++) offset += entry_count(layout_at(config, i));
    layout_entry e = layout_at(config, index);
    static const char *const layer_names[] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    memset(info, 0, sizeof *info);
    if (e.role == FC_WEIGHT || e.role == FC_BIAS)
        snprintf(info->name, sizeof info->name, "fc.%s", e.role == FC_WEIGHT ? "weight" : "bias");
    else
        snprintf(info->name, sizeof info->name, "%s.%s_l%d", cell_of(config)->name,
                 layer_names[e.role], e.layer);
    info->ndim = e.cols ? 2 : 1;
    info->shape[0] = (int64_t)e.rows;
    info->shape[1] = (int64_t)e.cols;
    info->offset = offset;
    info->count = entry_count(e);
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

    const cell_kind *cell = cell_of(config);
    size_t H = (size_t)config->hidden_size, V = (size_t)config->vocab_size;
    size_t GH = (size_t)cell->gates * H;
    param_tensors p;
    carve_params(config, params, &p);
    /* Each tensor draws from its own stream, derived from the seed and its
     * position, so adding a layer does not reshuffle the others. */
    uint64_t stream = splitmix64_mix(seed ^ 0x43686172524E4EULL);
    for (int k = 0; k < config->num_layers; k++) {
        size_t input = layer_input_size(config, k);
        float limit = sqrtf(6.0f / (float)(input + H + GH));
        uint64_t s_ih = stream + 4 * (uint64_t)k + 1, s_hh = stream + 4 * (uint64_t)k + 2;
        for (size_t i = 0; i < GH * input; i++)
            p.weight_ih[k][i] = limit * (2.0f * uniform_at(s_ih, i) - 1.0f);
        for (size_t i = 0; i < GH * H; i++)
            p.weight_hh[k][i] = limit * (2.0f * uniform_at(s_hh, i) - 1.0f);
        memset(p.bias_hh[k], 0, GH * sizeof(float));
        for (int q = 0; q < cell->gates; q++)
            for (size_t j = 0; j < H; j++)
                p.bias_ih[k][(size_t)q * H + j] = cell->bias_ih_init ? cell->bias_ih_init[q] : 0.0f;
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
