/*
 * Elementwise, logic and cast ops through a real session. The cases are tiny ONNX models that
 * tests/test_ops_elementwise_gen.py writes with numpy as the oracle (every binary op over every
 * dtype and broadcast layout, unary ops on float32/float64/float16/bfloat16/integers, Clip,
 * comparisons, Where's stride patterns, the full Cast matrix, legacy opset-6 broadcasting,
 * cases that must be rejected). Each case runs twice (plan reuse must give the same bytes) and
 * is compared exactly for integers and bools, with a tolerance per float type otherwise.
 * A second test checks that the broadcast planner collapses common layouts into the fast
 * one- and two-dim forms the kernels are written for.
 */
#include "check.h"
#include "runtime/ops/broadcast.h"
#include "runtime/ops/isa.h"
#include "shardserve/runtime.h"

#include <dirent.h>
#include <strings.h>
#include <sys/stat.h>

#define MAX_IO 8

/* Returns NULL when equal, else a description in buf. */
static const char *compare(const ss_tensor *got, const ss_tensor *want, char *buf, size_t cap)
{
    char a[128], b[128];
    if (got->dtype != want->dtype) {
        snprintf(buf, cap, "dtype %s, expected %s", ss_dtype_name(got->dtype),
                 ss_dtype_name(want->dtype));
        return buf;
    }
    if (!ss_shape_equal(got->ndim, got->dims, want->ndim, want->dims)) {
        snprintf(buf, cap, "shape %s, expected %s", ss_shape_str(got->ndim, got->dims, a, sizeof a),
                 ss_shape_str(want->ndim, want->dims, b, sizeof b));
        return buf;
    }
    int64_t n = ss_tensor_numel(want);
    if (!ss_dtype_is_float(want->dtype)) {
        size_t es = ss_dtype_size(want->dtype);
        for (int64_t i = 0; i < n; i++)
            if (memcmp((const char *)got->data + i * es, (const char *)want->data + i * es, es)) {
                snprintf(buf, cap, "element %lld differs (exact)", (long long)i);
                return buf;
            }
        return NULL;
    }
    double rtol = 1e-5, atol = 1e-6;
    if (want->dtype == SS_DT_FLOAT64) rtol = 1e-10, atol = 1e-12;
    if (want->dtype == SS_DT_FLOAT16) rtol = 2e-3, atol = 1e-4;
    if (want->dtype == SS_DT_BFLOAT16) rtol = 1e-2, atol = 1e-3;
    for (int64_t i = 0; i < n; i++) {
        double g = ss_tensor_elem_f64(got, i), w = ss_tensor_elem_f64(want, i);
        if (isnan(w) && isnan(g)) continue;
        if (isinf(w) && g == w) continue;
        if (!(fabs(g - w) <= atol + rtol * fabs(w))) {
            snprintf(buf, cap, "element %lld: got %.9g, expected %.9g", (long long)i, g, w);
            return buf;
        }
    }
    return NULL;
}

static bool file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0;
}

static ss_status *load_set(const char *dir, const char *kind, int n, ss_tensor *ts)
{
    char path[4096];
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/test_data_set_0/%s_%d.pb", dir, kind, i);
        ss_status *st = ss_onnx_parse_tensor_file(path, &ts[i]);
        if (st) return st;
    }
    return NULL;
}

/* A case with expect_error must fail at load or at the first run, with that code and text. */
static void run_error_case(const char *name, const char *dir, const char *expect)
{
    char code[32] = "", needle[200] = "";
    sscanf(expect, "%31s %199[^\n]", code, needle);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    ss_session *s = NULL;
    ss_status *st = ss_session_create(path, NULL, &s);
    ss_tensor ins[MAX_IO] = {0};
    if (!st) {
        int n = ss_session_num_inputs(s);
        st = load_set(dir, "input", n, ins);
        CHECK_MSG(!st, "%s: cannot read inputs: %s", name, st ? st->msg : "");
        if (!st) {
            const ss_tensor *outs;
            st = ss_session_run(s, ins, n, &outs);
        } else {
            ss_status_free(st);
            st = NULL;
        }
    }
    CHECK_MSG(st != NULL, "%s: expected an error (%s %s), got success", name, code, needle);
    if (st) {
        CHECK_MSG(!strcasecmp(ss_code_name(st->code), code), "%s: error code %s, expected %s (%s)",
                  name, ss_code_name(st->code), code, st->msg);
        CHECK_MSG(strstr(st->msg, needle) != NULL, "%s: error \"%s\" lacks \"%s\"", name, st->msg,
                  needle);
        ss_status_free(st);
    }
    for (int i = 0; i < MAX_IO; i++)
        ss_tensor_free(&ins[i]);
    ss_session_free(s);
}

static void run_case(const char *name, const char *dir)
{
    char path[4096], why[512];
    snprintf(path, sizeof path, "%s/expect_error", dir);
    if (file_exists(path)) {
        void *text = NULL;
        size_t len = 0;
        CHECK_OK(ss_read_file(path, &text, &len));
        char expect[256] = "";
        if (text) snprintf(expect, sizeof expect, "%.*s", (int)len, (const char *)text);
        free(text);
        run_error_case(name, dir, expect);
        return;
    }
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    ss_session *s = NULL;
    ss_status *st = ss_session_create(path, NULL, &s);
    if (st) {
        CHECK_MSG(0, "%s: load failed: %s", name, st->msg);
        ss_status_free(st);
        return;
    }
    int n_in = ss_session_num_inputs(s), n_out = ss_session_num_outputs(s);
    ss_tensor ins[MAX_IO] = {0}, wants[MAX_IO] = {0}, first[MAX_IO] = {0};
    CHECK(n_in <= MAX_IO && n_out <= MAX_IO);
    st = load_set(dir, "input", n_in, ins);
    if (!st) st = load_set(dir, "output", n_out, wants);
    const ss_tensor *outs = NULL;
    for (int rep = 0; !st && rep < 2; rep++) {
        st = ss_session_run(s, ins, n_in, &outs);
        for (int i = 0; !st && i < n_out; i++) {
            if (rep == 0) {
                st = ss_tensor_copy(&first[i], &outs[i]);
                const char *bad = st ? NULL : compare(&outs[i], &wants[i], why, sizeof why);
                CHECK_MSG(!bad, "%s: output %d: %s", name, i, bad);
            } else {
                CHECK_MSG(
                    outs[i].nbytes == first[i].nbytes &&
                        (!first[i].nbytes || !memcmp(outs[i].data, first[i].data, first[i].nbytes)),
                    "%s: output %d differs between two runs", name, i);
            }
        }
    }
    if (st) {
        CHECK_MSG(0, "%s: %s", name, st->msg);
        ss_status_free(st);
    }
    for (int i = 0; i < MAX_IO; i++) {
        ss_tensor_free(&ins[i]);
        ss_tensor_free(&wants[i]);
        ss_tensor_free(&first[i]);
    }
    ss_session_free(s);
}

/* Runs every case folder under root; returns how many ran. */
static long run_dir(const char *root)
{
    char path[4096];
    DIR *d = opendir(root);
    CHECK(d != NULL);
    if (!d) return 0;
    long ran = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", root, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) continue;
        run_case(e->d_name, path);
        ran++;
    }
    closedir(d);
    return ran;
}

static void generated_cases(void)
{
    const char *root = getenv("SS_OPS_EW_CASES");
    CHECK_MSG(root != NULL, "SS_OPS_EW_CASES is not set (run through ctest)");
    if (!root) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/count", root);
    void *text = NULL;
    size_t len = 0;
    CHECK_OK(ss_read_file(path, &text, &len));
    char count[32] = ""; /* the file is not NUL-terminated: copy what fits */
    if (text) memcpy(count, text, len < sizeof count - 1 ? len : sizeof count - 1);
    long expected = strtol(count, NULL, 10);
    free(text);
    /* every kernel variant this CPU can run (isa.h): the widest, then each narrower one */
    ss_isa best = ss_isa_detect();
    if (best < SS_ISA_AVX512)
        fprintf(stderr, "note: this CPU runs up to %s; wider kernel variants are not tested here\n",
                ss_isa_name(best));
    for (int level = (int)best; level >= SS_ISA_BASE; level--) {
        CHECK(ss_isa_force((ss_isa)level) == (ss_isa)level);
        long failed_before = check_failures, ran = run_dir(root);
        printf("%s kernels: %ld generated cases, %ld failed checks\n", ss_isa_name((ss_isa)level),
               ran, (long)(check_failures - failed_before));
        CHECK_MSG(ran == expected && expected >= 500, "ran %ld cases, the generator wrote %ld", ran,
                  expected);
    }
    ss_isa_force(best);
}

/* The planner must hand the kernels the simplest layout: one dim for same shapes and scalar
 * operands, two for a bias along the last dim or a per-row scalar. */
static void collapse_layouts(void)
{
    struct {
        int na, nb;
        int64_t a[4], b[4];
        int ndim;
        int64_t inner;
        unsigned mode;
    } cases[] = {
        {3, 3, {2, 3, 4}, {2, 3, 4}, 1, 24, 3},      /* same shape */
        {3, 0, {2, 3, 4}, {0}, 1, 24, 1},            /* scalar right */
        {0, 3, {0}, {2, 3, 4}, 1, 24, 2},            /* scalar left */
        {3, 1, {2, 3, 4}, {4}, 2, 4, 3},             /* bias along the last dim */
        {3, 3, {2, 3, 4}, {2, 3, 1}, 2, 4, 1},       /* per-row scalar (LayerNorm mean) */
        {4, 4, {2, 5, 7, 7}, {2, 1, 1, 7}, 3, 7, 3}, /* attention mask [B,1,1,S] */
        {3, 3, {2, 1, 4}, {1, 3, 1}, 3, 4, 1},       /* outer product-like */
        {2, 1, {1, 1}, {1}, 1, 1, 3},                /* a single element */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ss_tensor a = {.dtype = SS_DT_FLOAT32, .ndim = cases[i].na},
                  b = {.dtype = SS_DT_FLOAT32, .ndim = cases[i].nb};
        memcpy(a.dims, cases[i].a, sizeof cases[i].a);
        memcpy(b.dims, cases[i].b, sizeof cases[i].b);
        const ss_tensor *ins[2] = {&a, &b};
        ss_tensor out = {0};
        ss_kctx k = {0};
        ss_onnx_node node = ONNX__NODE_PROTO__INIT;
        node.op_type = "Add";
        k.node = &node;
        k.node_name = "test";
        CHECK_OK(ss_bcast_shape(&k, 2, ins, &out));
        ss_ew_plan p;
        ss_ew_plan_init(&p, 2, ins, out.ndim, out.dims, NULL, SS_DT_FLOAT32, true);
        CHECK_MSG(p.ndim == cases[i].ndim && p.inner == cases[i].inner && p.mode == cases[i].mode,
                  "layout %zu: ndim %d inner %lld mode %u, expected %d %lld %u", i, p.ndim,
                  (long long)p.inner, p.mode, cases[i].ndim, (long long)cases[i].inner,
                  cases[i].mode);
    }
    /* shapes that do not broadcast are an error naming both */
    ss_tensor a = {.dtype = SS_DT_FLOAT32, .ndim = 2, .dims = {2, 3}},
              b = {.dtype = SS_DT_FLOAT32, .ndim = 1, .dims = {4}};
    const ss_tensor *ins[2] = {&a, &b};
    ss_tensor out = {0};
    ss_kctx k = {0};
    ss_onnx_node node = ONNX__NODE_PROTO__INIT;
    node.op_type = "Add";
    k.node = &node;
    k.node_name = "test";
    CHECK_ERR(ss_bcast_shape(&k, 2, ins, &out), "[2,3] and [4]");
}

TEST_MAIN(TEST(collapse_layouts), TEST(generated_cases))
