/*
 * Recurrent ops: RNN, GRU and LSTM (opsets 7 to 21), every direction, activation (with
 * activation_alpha/beta), clip, sequence_lens, initial_h/initial_c, peepholes, input_forget,
 * layout and GRU's linear_before_reset; float32, with float16, bfloat16 and float64 computed in
 * float32 (their inputs converted into scratch, the outputs converted back).
 *
 * One kernel serves the three: the input projection X W^T + biases of every time step is one
 * GEMM up front, then each step is one GEMM of the hidden state with R^T (two for GRU without
 * linear_before_reset, whose candidate gate multiplies the reset gate in before R) and the gate
 * arithmetic per batch row. A row whose sequence has ended keeps its state and writes zeros to Y;
 * in the reverse direction each row starts at its own last step. All buffers are slices of the
 * plan's scratch, so run allocates nothing.
 */
#include "common.h"
#include "gemm_kernel.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

enum { RNN_PLAIN, RNN_GRU, RNN_LSTM };
enum { ACT_MAX = 3 }; /* activations per direction (LSTM's f, g, h) */

typedef enum {
    A_SIGMOID,
    A_TANH,
    A_RELU,
    A_AFFINE,
    A_LEAKY_RELU,
    A_THRESHOLDED_RELU,
    A_SCALED_TANH,
    A_HARD_SIGMOID,
    A_ELU,
    A_SOFTSIGN,
    A_SOFTPLUS,
} act_kind;

typedef struct {
    act_kind kind;
    float alpha, beta;
} act_fn;

typedef struct {
    int kind, gates, n_act, dirs;
    bool reverse_only, layout, lbr, input_forget;
    float clip; /* 0: none */
    int64_t seq, batch, in, hid;
    act_fn act[2][ACT_MAX];
} rnn_plan;

static const struct {
    const char *name;
    act_kind kind;
    int n_params; /* alpha, then beta, consumed from the attribute lists in this order */
    float alpha, beta;
} act_table[] = {
    {"Sigmoid", A_SIGMOID, 0, 0, 0},
    {"Tanh", A_TANH, 0, 0, 0},
    {"Relu", A_RELU, 0, 0, 0},
    {"Affine", A_AFFINE, 2, 1.0f, 0.0f},
    {"LeakyRelu", A_LEAKY_RELU, 1, 0.01f, 0},
    {"ThresholdedRelu", A_THRESHOLDED_RELU, 1, 1.0f, 0},
    {"ScaledTanh", A_SCALED_TANH, 2, 1.0f, 1.0f},
    {"HardSigmoid", A_HARD_SIGMOID, 2, 0.2f, 0.5f},
    {"Elu", A_ELU, 1, 1.0f, 0},
    {"Softsign", A_SOFTSIGN, 0, 0, 0},
    {"Softplus", A_SOFTPLUS, 0, 0, 0},
};

static float act_apply(const act_fn *a, float x)
{
    switch (a->kind) {
    case A_SIGMOID:
        return 1.0f / (1.0f + expf(-x));
    case A_TANH:
        return tanhf(x);
    case A_RELU:
        return x > 0 ? x : 0;
    case A_AFFINE:
        return a->alpha * x + a->beta;
    case A_LEAKY_RELU:
        return x >= 0 ? x : a->alpha * x;
    case A_THRESHOLDED_RELU:
        return x > a->alpha ? x : 0;
    case A_SCALED_TANH:
        return a->alpha * tanhf(a->beta * x);
    case A_HARD_SIGMOID: {
        float v = a->alpha * x + a->beta;
        return v < 0 ? 0 : v > 1 ? 1 : v;
    }
    case A_ELU:
        return x >= 0 ? x : a->alpha * (expf(x) - 1.0f);
    case A_SOFTSIGN:
        return x / (1.0f + fabsf(x));
    default:
        return log1pf(expf(x));
    }
}

/* ------------------------------------------------------------------ infer */

static const char *const rnn_attrs[] = {
    "activation_alpha", "activation_beta", "activations",         "clip",         "direction",
    "hidden_size",      "layout",          "linear_before_reset", "input_forget", NULL};

/* Activations for each direction from `activations` (default per op), alpha/beta taken in order
 * by the functions that have them (as onnxruntime reads the lists). */
static ss_status *rnn_parse_acts(ss_kctx *k, rnn_plan *p)
{
    static const char *const defaults[3][ACT_MAX] = {
        {"Tanh"}, {"Sigmoid", "Tanh"}, {"Sigmoid", "Tanh", "Tanh"}};
    const ss_onnx_attr *names = ss_onnx_attr_find(k->node, "activations");
    const ss_onnx_attr *al = ss_onnx_attr_find(k->node, "activation_alpha");
    const ss_onnx_attr *be = ss_onnx_attr_find(k->node, "activation_beta");
    size_t n_names = names ? names->n_strings : 0, ai = 0, bi = 0;
    if (names && n_names != (size_t)(p->n_act * p->dirs) && n_names != (size_t)p->n_act)
        return ss_op_err(k, SS_ERR_INVALID, "activations lists %zu functions, expects %d", n_names,
                         p->n_act * p->dirs);
    for (int d = 0; d < p->dirs; d++)
        for (int j = 0; j < p->n_act; j++) {
            char name[64];
            size_t at = (size_t)(d * p->n_act + j) % (n_names ? n_names : 1);
            if (names)
                snprintf(name, sizeof name, "%.*s", (int)names->strings[at].len,
                         (const char *)names->strings[at].data);
            else
                snprintf(name, sizeof name, "%s", defaults[p->kind][j]);
            size_t t = 0, nt = sizeof act_table / sizeof act_table[0];
            while (t < nt && strcasecmp(act_table[t].name, name) != 0)
                t++;
            if (t == nt)
                return ss_op_err(k, SS_ERR_UNSUPPORTED, "activation '%s' is not supported", name);
            act_fn *a = &p->act[d][j];
            a->kind = act_table[t].kind;
            a->alpha = act_table[t].alpha;
            a->beta = act_table[t].beta;
            if (act_table[t].n_params >= 1 && al && ai < al->n_floats) a->alpha = al->floats[ai++];
            if (act_table[t].n_params >= 2 && be && bi < be->n_floats) a->beta = be->floats[bi++];
        }
    return NULL;
}

static bool dims_are(const ss_tensor *t, int nd, int64_t d0, int64_t d1, int64_t d2)
{
    int64_t want[3] = {d0, d1, d2};
    if (t->ndim != nd) return false;
    for (int i = 0; i < nd; i++)
        if (t->dims[i] != want[i]) return false;
    return true;
}

static ss_status *rnn_check_inputs(ss_kctx *k, const rnn_plan *p)
{
    static const char *const names[8] = {"X",         "W",         "R", "B", "sequence_lens",
                                         "initial_h", "initial_c", "P"};
    int64_t gh = p->gates * p->hid, b0 = p->layout ? p->batch : p->dirs,
            b1 = p->layout ? p->dirs : p->batch;
    for (int i = 0; i < k->n_in; i++) {
        const ss_tensor *t = k->in[i];
        if (!t || i == 0) continue;
        bool ok = i == 4 ? t->dtype == SS_DT_INT32 : t->dtype == k->in[0]->dtype;
        switch (i) {
        case 1:
            ok = ok && dims_are(t, 3, p->dirs, gh, p->in);
            break;
        case 2:
            ok = ok && dims_are(t, 3, p->dirs, gh, p->hid);
            break;
        case 3:
            ok = ok && dims_are(t, 2, p->dirs, 2 * gh, 0);
            break;
        case 4:
            ok = ok && dims_are(t, 1, p->batch, 0, 0);
            break;
        case 5:
        case 6:
            ok = ok && dims_are(t, 3, b0, b1, p->hid);
            break;
        default:
            ok = ok && dims_are(t, 2, p->dirs, 3 * p->hid, 0);
            break;
        }
        if (!ok)
            return ss_op_err(k, SS_ERR_INVALID,
                             "input '%s' has the wrong type or shape (hidden_size %lld, %d "
                             "direction(s), batch %lld)",
                             names[i], (long long)p->hid, p->dirs, (long long)p->batch);
    }
    return NULL;
}

static ss_status *rnn_parse_attrs(ss_kctx *k, rnn_plan *p)
{
    char buf[32];
    const char *dir = ss_onnx_attr_string(k->node, "direction", buf, sizeof buf);
    if (!dir || !strcmp(dir, "forward"))
        p->dirs = 1;
    else if (!strcmp(dir, "reverse"))
        p->dirs = 1, p->reverse_only = true;
    else if (!strcmp(dir, "bidirectional"))
        p->dirs = 2;
    else
        return ss_op_err(k, SS_ERR_INVALID,
                         "direction '%s' is not forward, reverse or bidirectional", dir);
    p->layout = ss_onnx_attr_int(k->node, "layout", 0) != 0;
    p->lbr = ss_onnx_attr_int(k->node, "linear_before_reset", 0) != 0;
    p->input_forget = ss_onnx_attr_int(k->node, "input_forget", 0) != 0;
    p->clip = ss_onnx_attr_float(k->node, "clip", 0.0f);
    if (p->clip < 0) return ss_op_err(k, SS_ERR_INVALID, "clip must be positive");
    const ss_tensor *x = k->in[0], *r = k->in[2];
    p->seq = x->dims[p->layout ? 1 : 0];
    p->batch = x->dims[p->layout ? 0 : 1];
    p->in = x->dims[2];
    p->hid = ss_onnx_attr_int(k->node, "hidden_size", r->ndim == 3 ? r->dims[2] : 0);
    if (p->hid < 1 || p->hid > (1 << 20))
        return ss_op_err(k, SS_ERR_INVALID, "hidden_size %lld is outside [1, 2^20]",
                         (long long)p->hid);
    return rnn_parse_acts(k, p);
}

/* Scratch: the input projection [seq * batch, G*H], the recurrent projection [batch, G*H], the
 * state h and c [batch, H] each, and GRU's reset-gated state and candidate [batch, H] each. */
static size_t rnn_scratch_floats(const rnn_plan *p)
{
    int64_t gh = p->gates * p->hid;
    return (size_t)(p->seq * p->batch * gh + p->batch * gh + 4 * p->batch * p->hid);
}

static void rnn_set_outputs(ss_kctx *k, const rnn_plan *p)
{
    ss_tensor *y = k->n_out > 0 ? k->out[0] : NULL;
    if (y) {
        y->dtype = k->in[0]->dtype;
        y->ndim = 4;
        int64_t d[4] = {p->seq, p->dirs, p->batch, p->hid};
        if (p->layout) d[0] = p->batch, d[1] = p->seq, d[2] = p->dirs;
        memcpy(y->dims, d, sizeof d);
    }
    for (int i = 1; i < k->n_out && i < 3; i++) {
        ss_tensor *o = k->out[i];
        if (!o) continue;
        o->dtype = k->in[0]->dtype;
        o->ndim = 3;
        o->dims[0] = p->layout ? p->batch : p->dirs;
        o->dims[1] = p->layout ? p->dirs : p->batch;
        o->dims[2] = p->hid;
    }
}

static ss_status *rnn_infer(ss_kctx *k, int kind)
{
    static const int gates[3] = {1, 3, 4};
    int max_in = kind == RNN_LSTM ? 8 : 6, max_out = kind == RNN_LSTM ? 3 : 2;
    ss_status *st = ss_op_check_attrs(k, rnn_attrs);
    if (!st) st = ss_op_expect_inputs(k, 3, max_in);
    if (st) return st;
    if (k->n_out > max_out)
        return ss_op_err(k, SS_ERR_INVALID, "has %d outputs, at most %d", k->n_out, max_out);
    static const ss_dtype types[] = {SS_DT_FLOAT32, SS_DT_FLOAT16, SS_DT_BFLOAT16, SS_DT_FLOAT64};
    if ((st = ss_op_expect_dtype(k, 0, types, 4))) return st;
    if (k->in[0]->ndim != 3 || k->in[2]->ndim != 3)
        return ss_op_err(k, SS_ERR_INVALID, "X and R must be 3-D");
    if (kind != RNN_GRU && ss_onnx_attr_find(k->node, "linear_before_reset"))
        return ss_op_err(k, SS_ERR_INVALID, "linear_before_reset is a GRU attribute");
    if (kind != RNN_LSTM && ss_onnx_attr_find(k->node, "input_forget"))
        return ss_op_err(k, SS_ERR_INVALID, "input_forget is an LSTM attribute");
    rnn_plan *p = ss_op_state_alloc(k, sizeof *p);
    if (!p) return ss_op_oom();
    p->kind = kind;
    p->gates = gates[kind];
    p->n_act = kind == RNN_PLAIN ? 1 : kind == RNN_GRU ? 2 : 3;
    if ((st = rnn_parse_attrs(k, p)) || (st = rnn_check_inputs(k, p))) return st;
    rnn_set_outputs(k, p);
    k->scratch_bytes = sizeof(float) * (rnn_scratch_floats(p) + ss_op_f32_floats(k));
    return NULL;
}

static ss_status *rnn_infer_plain(ss_kctx *k)
{
    return rnn_infer(k, RNN_PLAIN);
}

static ss_status *rnn_infer_gru(ss_kctx *k)
{
    return rnn_infer(k, RNN_GRU);
}

static ss_status *rnn_infer_lstm(ss_kctx *k)
{
    return rnn_infer(k, RNN_LSTM);
}

/* ------------------------------------------------------------------ run */

/* One direction's view of the inputs and its scratch. */
typedef struct {
    const rnn_plan *p;
    const act_fn *act;
    const float *w, *r, *wb, *rb, *peep; /* wb/rb/peep NULL when absent */
    const int32_t *lens;
    float *xw, *hr, *h, *c, *rh, *cand;
    float *y; /* the Y output or NULL */
    int d;    /* direction index in the outputs */
    bool reverse;
} rnn_dir;

static float clipf(const rnn_plan *p, float v)
{
    return p->clip > 0 ? (v < -p->clip ? -p->clip : v > p->clip ? p->clip : v) : v;
}

static int64_t seq_len(const rnn_dir *s, int64_t b)
{
    if (!s->lens) return s->p->seq;
    int64_t n = s->lens[b];
    return n < 0 ? 0 : n > s->p->seq ? s->p->seq : n;
}

/* Row of xw for time t and batch b (xw keeps X's own row order). */
static float *xw_row(const rnn_dir *s, int64_t t, int64_t b)
{
    const rnn_plan *p = s->p;
    int64_t row = p->layout ? b * p->seq + t : t * p->batch + b;
    return s->xw + row * p->gates * p->hid;
}

static float *y_at(const rnn_dir *s, int64_t t, int64_t b)
{
    const rnn_plan *p = s->p;
    int64_t i = p->layout ? (b * p->seq + t) * p->dirs + s->d : (t * p->dirs + s->d) * p->batch + b;
    return s->y + i * p->hid;
}

/* X W^T plus both biases (GRU with linear_before_reset keeps Rb of the candidate apart). */
static void rnn_project_input(const rnn_dir *s, const float *x)
{
    const rnn_plan *p = s->p;
    int64_t gh = p->gates * p->hid, rows = p->seq * p->batch;
    ss_op_blas_gemm(SS_DT_FLOAT32, false, true, rows, gh, p->in, 1.0f, x, p->in, s->w, p->in, 0.0f,
                    s->xw);
    if (!s->wb) return;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < gh; j++) {
            bool keep_rb = p->kind == RNN_GRU && p->lbr && j >= 2 * p->hid;
            s->xw[r * gh + j] += s->wb[j] + (keep_rb ? 0 : s->rb[j]);
        }
}

static void lstm_cell(const rnn_dir *s, const float *xw, const float *hr, int64_t b)
{
    const rnn_plan *p = s->p;
    int64_t H = p->hid;
    float *h = s->h + b * H, *c = s->c + b * H;
    const float *pi = s->peep, *po = s->peep ? s->peep + H : NULL,
                *pf = s->peep ? s->peep + 2 * H : NULL;
    for (int64_t j = 0; j < H; j++) {
        float g_i = xw[j] + hr[j], g_o = xw[H + j] + hr[H + j], g_f = xw[2 * H + j] + hr[2 * H + j],
              g_c = xw[3 * H + j] + hr[3 * H + j];
        float i = act_apply(&s->act[0], clipf(p, g_i + (pi ? pi[j] * c[j] : 0)));
        float f = p->input_forget ? 1.0f - i
                                  : act_apply(&s->act[0], clipf(p, g_f + (pf ? pf[j] * c[j] : 0)));
        float cc = act_apply(&s->act[1], clipf(p, g_c));
        c[j] = f * c[j] + i * cc;
        float o = act_apply(&s->act[0], clipf(p, g_o + (po ? po[j] * c[j] : 0)));
        h[j] = o * act_apply(&s->act[2], c[j]);
    }
}

static void plain_cell(const rnn_dir *s, const float *xw, const float *hr, int64_t b)
{
    float *h = s->h + b * s->p->hid;
    for (int64_t j = 0; j < s->p->hid; j++)
        h[j] = act_apply(&s->act[0], clipf(s->p, xw[j] + hr[j]));
}

/* GRU's update and reset gates into z (kept in hr's z slot) and the reset-gated state rh. */
static void gru_gates(const rnn_dir *s, const float *xw, float *hr, int64_t b)
{
    int64_t H = s->p->hid;
    for (int64_t j = 0; j < 2 * H; j++)
        hr[j] = act_apply(&s->act[0], clipf(s->p, xw[j] + hr[j]));
    if (!s->p->lbr)
        for (int64_t j = 0; j < H; j++)
            s->rh[b * H + j] = hr[H + j] * s->h[b * H + j];
}

static void gru_cell(const rnn_dir *s, const float *xw, const float *hr, int64_t b)
{
    const rnn_plan *p = s->p;
    int64_t H = p->hid;
    float *h = s->h + b * H;
    const float *rbh = s->rb ? s->rb + 2 * H : NULL;
    for (int64_t j = 0; j < H; j++) {
        float pre = p->lbr ? xw[2 * H + j] + hr[H + j] * (hr[2 * H + j] + (rbh ? rbh[j] : 0))
                           : xw[2 * H + j] + s->cand[b * H + j];
        float hh = act_apply(&s->act[1], clipf(p, pre)), z = hr[j];
        h[j] = (1.0f - z) * hh + z * h[j];
    }
}

/* Time step `step` for every batch row still inside its sequence. */
static void rnn_step(const rnn_dir *s, int64_t step)
{
    const rnn_plan *p = s->p;
    int64_t H = p->hid, gh = p->gates * H, B = p->batch;
    bool split = p->kind == RNN_GRU && !p->lbr; /* the candidate's R product comes later */
    ss_op_blas_gemm(SS_DT_FLOAT32, false, true, B, split ? 2 * H : gh, H, 1.0f, s->h, H, s->r, H,
                    0.0f, s->hr);
    int64_t ld = split ? 2 * H : gh;
    if (p->kind == RNN_GRU) {
        for (int64_t b = 0; b < B; b++) {
            int64_t n = seq_len(s, b), t = s->reverse ? n - 1 - step : step;
            if (step < n) gru_gates(s, xw_row(s, t, b), s->hr + b * ld, b);
        }
        if (split)
            ss_op_blas_gemm(SS_DT_FLOAT32, false, true, B, H, H, 1.0f, s->rh, H, s->r + 2 * H * H,
                            H, 0.0f, s->cand);
    }
    for (int64_t b = 0; b < B; b++) {
        int64_t n = seq_len(s, b), t = s->reverse ? n - 1 - step : step;
        if (step >= n) {
            if (s->y) memset(y_at(s, step, b), 0, sizeof(float) * (size_t)H);
            continue;
        }
        const float *xw = xw_row(s, t, b), *hr = s->hr + b * ld;
        if (p->kind == RNN_LSTM)
            lstm_cell(s, xw, hr, b);
        else if (p->kind == RNN_GRU)
            gru_cell(s, xw, hr, b);
        else
            plain_cell(s, xw, hr, b);
        if (s->y) memcpy(y_at(s, t, b), s->h + b * H, sizeof(float) * (size_t)H);
    }
}

/* Initial state slice of direction d (initial_h/initial_c follow Y_h's layout), or zeros. */
static void rnn_load_state(const rnn_dir *s, const ss_tensor *init, float *dst)
{
    const rnn_plan *p = s->p;
    for (int64_t b = 0; b < p->batch; b++) {
        float *row = dst + b * p->hid;
        if (!init) {
            memset(row, 0, sizeof(float) * (size_t)p->hid);
            continue;
        }
        int64_t at = p->layout ? b * p->dirs + s->d : s->d * p->batch + b;
        memcpy(row, (const float *)init->data + at * p->hid, sizeof(float) * (size_t)p->hid);
    }
}

static void rnn_store_state(const rnn_dir *s, const float *src, ss_tensor *out)
{
    const rnn_plan *p = s->p;
    if (!out) return;
    for (int64_t b = 0; b < p->batch; b++) {
        int64_t at = p->layout ? b * p->dirs + s->d : s->d * p->batch + b;
        memcpy((float *)out->data + at * p->hid, src + b * p->hid, sizeof(float) * (size_t)p->hid);
    }
}

static const ss_tensor *opt_in(const ss_kctx *k, int i)
{
    return i < k->n_in ? k->in[i] : NULL;
}

static ss_tensor *opt_out(const ss_kctx *k, int i)
{
    return i < k->n_out ? k->out[i] : NULL;
}

static rnn_dir rnn_dir_make(ss_kctx *k, int d)
{
    const rnn_plan *p = k->state;
    int64_t gh = p->gates * p->hid;
    float *sc = k->scratch;
    rnn_dir s = {.p = p, .act = p->act[d], .d = d};
    s.reverse = p->reverse_only || d == 1;
    s.w = (const float *)k->in[1]->data + d * gh * p->in;
    s.r = (const float *)k->in[2]->data + d * gh * p->hid;
    const ss_tensor *bias = opt_in(k, 3), *lens = opt_in(k, 4), *peep = opt_in(k, 7);
    if (bias) s.wb = (const float *)bias->data + d * 2 * gh, s.rb = s.wb + gh;
    if (lens) s.lens = lens->data;
    if (peep && p->kind == RNN_LSTM) s.peep = (const float *)peep->data + d * 3 * p->hid;
    s.xw = sc;
    s.hr = s.xw + p->seq * p->batch * gh;
    s.h = s.hr + p->batch * gh;
    s.c = s.h + p->batch * p->hid;
    s.rh = s.c + p->batch * p->hid;
    s.cand = s.rh + p->batch * p->hid;
    ss_tensor *y = opt_out(k, 0);
    s.y = y ? y->data : NULL;
    return s;
}

static ss_status *rnn_run_f32(ss_kctx *k)
{
    const rnn_plan *p = k->state;
    for (int d = 0; d < p->dirs; d++) {
        rnn_dir s = rnn_dir_make(k, d);
        rnn_project_input(&s, k->in[0]->data);
        rnn_load_state(&s, opt_in(k, 5), s.h);
        rnn_load_state(&s, p->kind == RNN_LSTM ? opt_in(k, 6) : NULL, s.c);
        memset(s.rh, 0, sizeof(float) * (size_t)(p->batch * p->hid));
        for (int64_t step = 0; step < p->seq; step++)
            rnn_step(&s, step);
        rnn_store_state(&s, s.h, opt_out(k, 1));
        if (p->kind == RNN_LSTM) rnn_store_state(&s, s.c, opt_out(k, 2));
    }
    return NULL;
}

/* Another float type: the float32 kernel on converted copies (common.h). */
static ss_status *rnn_run(ss_kctx *k)
{
    return k->in[0]->dtype == SS_DT_FLOAT32 ? rnn_run_f32(k) : ss_op_run_as_f32(k, rnn_run_f32);
}

const ss_op_def ss_ops_rnn[] = {
    {"", "RNN", 7, 21, rnn_infer_plain, rnn_run, 0},
    {"", "GRU", 7, 21, rnn_infer_gru, rnn_run, 0},
    {"", "LSTM", 7, 21, rnn_infer_lstm, rnn_run, 0},
    {0},
};
