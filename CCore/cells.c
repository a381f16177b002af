/*
 * The recurrent cells: each one's table entry (shape, state, initialisation)
 * and its two kernels, forward beside backward. The forward kernel is the
 * cell's arithmetic for one step and serves training (all units of a
 * thread's rows) and charrnn_step (a thread's units of every row) alike; the
 * matrix products around it are the caller's (model.c, sample.c), driven by
 * the table's `gates` and `split`.
 *
 * Adding a cell: write its two kernels here, add its entry to `cells`, and
 * a charrnn_cell value in charrnn.h.
 */
#include "internal.h"

/* Row b's part of the input term that the kernel adds: a row of the lookup
 * table chosen by the step's token, or the table's row 0 (the biases). */
static inline const float *input_row(const cell_forward_args *a, size_t b, size_t width) {
    return a->tokens ? a->x_rows + (size_t)a->tokens[b * a->token_stride] * width : a->x_rows;
}

/* ========================================================================
 * LSTM (torch.nn.LSTM): gates i, f, g, o.
 *   i = s(G_i)  f = s(G_f)  g = tanh(G_g)  o = s(G_o)
 *   c_t = f * c_{t-1} + i * g      h_t = o * tanh(c_t)
 * aux keeps tanh(c_t).
 * ======================================================================== */

CHARRNN_VECTOR_CLONES static void lstm_forward(const cell_forward_args *a) {
    size_t H = a->H, u0 = a->u0, u1 = a->u1;
    for (size_t b = a->b0; b < a->b1; b++) {
        float *restrict gi = a->G + b * 4 * H, *restrict gf = gi + H, *restrict gg = gi + 2 * H,
                        *restrict go = gi + 3 * H;
        const float *restrict xi = input_row(a, b, 4 * H);
        const float *restrict xf = xi + H, *restrict xg = xi + 2 * H, *restrict xo = xi + 3 * H;
        const float *restrict cp = a->c_prev + b * H;
        float *restrict cn = a->c + b * H, *restrict tc = a->aux + b * H, *restrict hn = a->h + b * H;
#pragma omp simd
        for (size_t j = u0; j < u1; j++) {
            float i = fast_sigmoid(gi[j] + xi[j]), f = fast_sigmoid(gf[j] + xf[j]);
            float g = fast_tanh(gg[j] + xg[j]), o = fast_sigmoid(go[j] + xo[j]);
            float cell = f * cp[j] + i * g;
            float tcell = fast_tanh(cell);
            gi[j] = i; gf[j] = f; gg[j] = g; go[j] = o;
            cn[j] = cell; tc[j] = tcell; hn[j] = o * tcell;
        }
    }
}

/*   dh = dy * mask + dh_rec
 *   dc = dc_next + dh * o * (1 - tanh_c^2)
 * then the four gates' pre-activation gradients and dc_next = dc * f. No
 * path reaches h_{t-1} except through W_hh. */
CHARRNN_VECTOR_CLONES static void lstm_backward(const cell_backward_args *a) {
    size_t H = a->H;
    for (size_t b = a->b0; b < a->b1; b++) {
        const float *restrict gi = a->G + b * 4 * H, *restrict gf = gi + H,
                              *restrict gg = gi + 2 * H, *restrict go = gi + 3 * H;
        float *restrict di = a->dG + b * 4 * H, *restrict df = di + H, *restrict dg = di + 2 * H,
                        *restrict dO = di + 3 * H;
        const float *restrict cp = a->c_prev + b * H, *restrict tc = a->aux + b * H,
                              *restrict dyb = a->dy + b * H, *restrict mb = a->mask + b * H;
        float *restrict dhr = a->dh_rec + b * H, *restrict dcn = a->dc_next + b * H;
#pragma omp simd
        for (size_t j = 0; j < H; j++) {
            float i = gi[j], f = gf[j], g = gg[j], o = go[j], t = tc[j];
            float dh = dyb[j] * mb[j] + dhr[j];
            float dc = dcn[j] + dh * o * (1.0f - t * t);
            di[j] = dc * g * i * (1.0f - i);
            df[j] = dc * cp[j] * f * (1.0f - f);
            dg[j] = dc * i * (1.0f - g * g);
            dO[j] = dh * t * o * (1.0f - o);
            dcn[j] = dc * f;
            dhr[j] = 0.0f;
        }
    }
}

/* ========================================================================
 * GRU (torch.nn.GRU): gates r, z, n; n is the split block.
 *   r = s(G_r)  z = s(G_z)  n = tanh(G_n + r * (R_n + b_hn))
 *   h_t = (1 - z) * n + z * h_{t-1}
 * aux keeps R_n + b_hn, which backward needs for r's gradient.
 * ======================================================================== */

CHARRNN_VECTOR_CLONES static void gru_forward(const cell_forward_args *a) {
    size_t H = a->H, u0 = a->u0, u1 = a->u1;
    const float *restrict bn = a->b_split;
    for (size_t b = a->b0; b < a->b1; b++) {
        float *restrict gr = a->G + b * 3 * H, *restrict gz = gr + H, *restrict gn = gr + 2 * H;
        const float *restrict xr = input_row(a, b, 3 * H);
        const float *restrict xz = xr + H, *restrict xn = xr + 2 * H;
        const float *restrict rn = a->R + b * H, *restrict hp = a->h_prev + b * H;
        float *restrict hh = a->aux + b * H, *restrict hn = a->h + b * H;
#pragma omp simd
        for (size_t j = u0; j < u1; j++) {
            float r = fast_sigmoid(gr[j] + xr[j]), z = fast_sigmoid(gz[j] + xz[j]);
            float recurrent = rn[j] + bn[j];
            float n = fast_tanh(gn[j] + xn[j] + r * recurrent);
            gr[j] = r; gz[j] = z; gn[j] = n;
            hh[j] = recurrent;
            hn[j] = (1.0f - z) * n + z * hp[j];
        }
    }
}

/*   dh = dy * mask + dh_rec
 *   dn = dh (1 - z)(1 - n^2)          (at n's pre-activation; = dG_n)
 *   dG_z = dh (h_{t-1} - n) z (1 - z)
 *   dG_r = dn (R_n + b_hn) r (1 - r)
 *   dR_n = dn r                        (at W_hn h + b_hn)
 * and dh z reaches h_{t-1} directly. */
CHARRNN_VECTOR_CLONES static void gru_backward(const cell_backward_args *a) {
    size_t H = a->H;
    for (size_t b = a->b0; b < a->b1; b++) {
        const float *restrict gr = a->G + b * 3 * H, *restrict gz = gr + H, *restrict gn = gr + 2 * H;
        float *restrict dr = a->dG + b * 3 * H, *restrict dz = dr + H, *restrict dn = dr + 2 * H;
        const float *restrict hh = a->aux + b * H, *restrict hp = a->h_prev + b * H,
                              *restrict dyb = a->dy + b * H, *restrict mb = a->mask + b * H;
        float *restrict dhr = a->dh_rec + b * H, *restrict drn = a->dR + b * H;
#pragma omp simd
        for (size_t j = 0; j < H; j++) {
            float r = gr[j], z = gz[j], n = gn[j];
            float dh = dyb[j] * mb[j] + dhr[j];
            float dpre_n = dh * (1.0f - z) * (1.0f - n * n);
            dz[j] = dh * (hp[j] - n) * z * (1.0f - z);
            dr[j] = dpre_n * hh[j] * r * (1.0f - r);
            dn[j] = dpre_n;
            drn[j] = dpre_n * r;
            dhr[j] = dh * z;
        }
    }
}

/* ========================================================================
 * RNN (torch.nn.RNN, tanh): h_t = tanh(G). No aux: backward reads h_t.
 * ======================================================================== */

CHARRNN_VECTOR_CLONES static void rnn_forward(const cell_forward_args *a) {
    size_t H = a->H, u0 = a->u0, u1 = a->u1;
    for (size_t b = a->b0; b < a->b1; b++) {
        float *restrict g = a->G + b * H;
        const float *restrict x = input_row(a, b, H);
        float *restrict hn = a->h + b * H;
#pragma omp simd
        for (size_t j = u0; j < u1; j++) {
            float h = fast_tanh(g[j] + x[j]);
            g[j] = h;
            hn[j] = h;
        }
    }
}

/*   dG = (dy * mask + dh_rec) (1 - h_t^2) */
CHARRNN_VECTOR_CLONES static void rnn_backward(const cell_backward_args *a) {
    size_t H = a->H;
    for (size_t b = a->b0; b < a->b1; b++) {
        const float *restrict hn = a->h + b * H, *restrict dyb = a->dy + b * H,
                              *restrict mb = a->mask + b * H;
        float *restrict dg = a->dG + b * H, *restrict dhr = a->dh_rec + b * H;
#pragma omp simd
        for (size_t j = 0; j < H; j++) {
            float h = hn[j];
            dg[j] = (dyb[j] * mb[j] + dhr[j]) * (1.0f - h * h);
            dhr[j] = 0.0f;
        }
    }
}

/* ========================================================================
 * The table, indexed by charrnn_cell.
 * ======================================================================== */

/* Initial input biases per gate block (charrnn.h says why): the LSTM's
 * forget gate starts open, everything else at zero. */
static const float lstm_bias_ih_init[4] = {0.0f, 1.0f, 0.0f, 0.0f}; /* i, f, g, o */

static const cell_kind cells[CHARRNN_CELL_COUNT] = {
    [CHARRNN_CELL_LSTM] = {.name = "lstm", .gates = 4, .split = 0, .states = 2, .has_aux = 1,
                           .bias_ih_init = lstm_bias_ih_init,
                           .forward = lstm_forward, .backward = lstm_backward},
    [CHARRNN_CELL_GRU] = {.name = "gru", .gates = 3, .split = 1, .states = 1, .has_aux = 1,
                          .forward = gru_forward, .backward = gru_backward},
    [CHARRNN_CELL_RNN] = {.name = "rnn", .gates = 1, .split = 0, .states = 1, .has_aux = 0,
                          .forward = rnn_forward, .backward = rnn_backward},
};

const cell_kind *cell_of(const charrnn_config *c) { return &cells[c->cell]; }

charrnn_status charrnn_cell_info_get(int32_t cell, charrnn_cell_info *info) {
    if (!info) return CHARRNN_ERR_NULL_POINTER;
    if (cell < 0 || cell >= CHARRNN_CELL_COUNT) return CHARRNN_ERR_INVALID_CONFIG;
    info->name = cells[cell].name;
    info->gates = cells[cell].gates;
    info->state_tensors = cells[cell].states;
    return CHARRNN_OK;
}

charrnn_status charrnn_cell_from_name(const char *name, int32_t *cell) {
    if (!name || !cell) return CHARRNN_ERR_NULL_POINTER;
    for (int32_t i = 0; i < CHARRNN_CELL_COUNT; i++)
        if (strcmp(name, cells[i].name) == 0) {
            *cell = i;
            return CHARRNN_OK;
        }
    return CHARRNN_ERR_INVALID_CONFIG;
}
