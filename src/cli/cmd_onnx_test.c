/*
 * shardserve onnx-test [--rtol R] [--atol A] [--atol-of-max F] DIR...
 * Runs ONNX backend test cases (model.onnx + test_data_set_N/input_K.pb, output_*.pb). A DIR
 * is a case folder or a folder of case folders. Float outputs match where
 * |got - want| <= atol + rtol * |want| (default rtol 1e-3, atol 1e-5) or, with --atol-of-max,
 * where |got - want| <= F * max|want| over that output: a real model's near-zero elements of a
 * large output carry the rounding of the large ones (onnxruntime's own kernels differ there).
 * Integers and bools compare exactly; NaN matches NaN. One line per case:
 *   PASS name (max abs error E) | FAIL name: worst error | UNSUPPORTED name: what is missing |
 *   SKIP name: the case's own data contradicts its model
 * A model that draws random numbers (RandomUniform, Bernoulli...) cannot match another runtime's
 * draws: its outputs are checked for dtype, shape and, where the expected output takes at most two
 * values (a Bernoulli's 0 and 1), that every element is one of them (PASS name (random draws ...)).
 * then "N passed, N failed, N skipped"; the exit status is 1 if any case failed.
 */
#include "cli.h"
#include "shardserve/runtime.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_IO 64
#define INCONSISTENT_CASE "inconsistent test case"

/* The comparison's tolerances (options) and the largest float error any output showed. */
typedef struct {
    double rtol, atol, atol_of_max;
    double max_err;
    bool any_float;
} tolerance;

static tolerance tol = {.rtol = 1e-3, .atol = 1e-5};

typedef struct {
    int passed, failed, skipped;
} tally;

static bool is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Compare one output; on mismatch write the worst error into why. */
static bool compare(const char *name, const ss_tensor *got, const ss_tensor *want, char *why,
                    size_t cap)
{
    char a[160], b[160];
    if (got->dtype != want->dtype) {
        snprintf(why, cap, "output '%s' is %s, expected %s", name, ss_dtype_name(got->dtype),
                 ss_dtype_name(want->dtype));
        return false;
    }
    if (!ss_shape_equal(got->ndim, got->dims, want->ndim, want->dims)) {
        snprintf(why, cap, "output '%s' has shape %s, expected %s", name,
                 ss_shape_str(got->ndim, got->dims, a, sizeof a),
                 ss_shape_str(want->ndim, want->dims, b, sizeof b));
        return false;
    }
    int64_t n = ss_tensor_numel(want);
    if (want->dtype == SS_DT_STRING) {
        const ss_string *g = got->data, *w = want->data;
        for (int64_t i = 0; i < n; i++)
            if (g[i].len != w[i].len || memcmp(g[i].data, w[i].data, w[i].len)) {
                snprintf(why, cap, "output '%s' string %lld differs", name, (long long)i);
                return false;
            }
        return true;
    }
    if (!ss_dtype_is_float(want->dtype)) {
        size_t es = ss_dtype_size(want->dtype);
        for (int64_t i = 0; i < n; i++)
            if (memcmp((const char *)got->data + i * es, (const char *)want->data + i * es, es)) {
                snprintf(why, cap, "output '%s' differs at element %lld (exact comparison)", name,
                         (long long)i);
                return false;
            }
        return true;
    }
    double worst = 0, of_max = 0;
    int64_t worst_i = -1;
    for (int64_t i = 0; tol.atol_of_max > 0 && i < n; i++) {
        double w = fabs(ss_tensor_elem_f64(want, i));
        if (isfinite(w) && w > of_max) of_max = w;
    }
    of_max *= tol.atol_of_max;
    tol.any_float = true;
    for (int64_t i = 0; i < n; i++) {
        double g = ss_tensor_elem_f64(got, i), w = ss_tensor_elem_f64(want, i);
        if (isnan(w) && isnan(g)) continue;
        if (isinf(w) && g == w) continue;
        double err = fabs(g - w);
        if (!(err <= tol.max_err)) tol.max_err = err; /* NaN too: it shows */
        bool near = err <= tol.atol + tol.rtol * fabs(w) || err <= of_max;
        if (!near && (worst_i < 0 || !(err <= worst))) {
            worst = err;
            worst_i = i;
        }
    }
    if (worst_i >= 0) {
        snprintf(why, cap, "output '%s' max abs error %g at element %lld (got %g, expected %g)",
                 name, worst, (long long)worst_i, ss_tensor_elem_f64(got, worst_i),
                 ss_tensor_elem_f64(want, worst_i));
        return false;
    }
    return true;
}

/* Does the model (its main graph) draw random numbers? */
static bool draws_random(ss_session *s)
{
    static const char *const ops[] = {"Bernoulli",        "Multinomial",   "RandomNormal",
                                      "RandomNormalLike", "RandomUniform", "RandomUniformLike"};
    const Onnx__GraphProto *g = ss_session_model(s)->proto->graph;
    for (size_t i = 0; i < g->n_node; i++)
        for (size_t j = 0; j < sizeof ops / sizeof ops[0]; j++)
            if (g->node[i]->op_type && !strcmp(g->node[i]->op_type, ops[j])) return true;
    return false;
}

/* A random draw against another runtime's: dtype and shape as compare() checks them, then, when
 * the expected values are at most two distinct ones, every element must be one of them. */
static bool compare_draws(const char *name, const ss_tensor *got, const ss_tensor *want, char *why,
                          size_t cap)
{
    if (want->dtype == SS_DT_STRING || want->dtype == SS_DT_SEQUENCE || got->dtype != want->dtype ||
        !ss_shape_equal(got->ndim, got->dims, want->ndim, want->dims))
        return compare(name, got, want, why, cap);
    int64_t n = ss_tensor_numel(want);
    double v[2];
    int nv = 0;
    for (int64_t i = 0; i < n && nv <= 2; i++) {
        double w = ss_tensor_elem_f64(want, i);
        if (!(nv > 0 && w == v[0]) && !(nv > 1 && w == v[1])) {
            if (nv < 2) v[nv] = w;
            nv++;
        }
    }
    for (int64_t i = 0; nv <= 2 && i < n; i++) {
        double g = ss_tensor_elem_f64(got, i);
        if (!(nv > 0 && g == v[0]) && !(nv > 1 && g == v[1])) {
            snprintf(why, cap,
                     "output '%s' element %lld is %g, not one of the values the case draws", name,
                     (long long)i, g);
            return false;
        }
    }
    return true;
}

/* onnx 1.12's test data stores bfloat16 tensors as uint16 bit patterns: read them as bfloat16. */
static void relabel_bfloat16(ss_tensor *t, ss_dtype declared)
{
    if (declared == SS_DT_BFLOAT16 && t->dtype == SS_DT_UINT16) t->dtype = SS_DT_BFLOAT16;
}

/* ------------------------------------------------------------------ sequence values
 * A seq(tensor) input or output is stored as a SequenceProto (onnx-data.proto: 1 name,
 * 2 elem_type, 3 tensor_values), an optional one as an OptionalProto (1 name, 2 elem_type:
 * 1 tensor or 3 sequence, 3 tensor_value, 5 sequence_value). Debian's onnx.proto has neither, so
 * their fields are walked here; each tensor is an ordinary TensorProto. */

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return true;
    }
    return false;
}

/* One field of a message: its number, and its varint value or its bytes. */
typedef struct {
    uint64_t field, value;
    const uint8_t *bytes;
    size_t len;
} proto_field;

/* The next field of [*p, end); false at the end. Groups and fixed-size fields are errors. */
static ss_status *next_field(const uint8_t **p, const uint8_t *end, proto_field *f, bool *more)
{
    uint64_t key;
    *more = *p < end;
    if (!*more) return NULL;
    if (!read_varint(p, end, &key)) return ss_errf(SS_ERR_INVALID, "truncated message");
    *f = (proto_field){.field = key >> 3};
    if ((key & 7) == 0)
        return read_varint(p, end, &f->value) ? NULL : ss_errf(SS_ERR_INVALID, "truncated varint");
    if ((key & 7) != 2 || !read_varint(p, end, &f->value) || f->value > (uint64_t)(end - *p))
        return ss_errf(SS_ERR_INVALID, "not a SequenceProto or OptionalProto");
    f->bytes = *p, f->len = (size_t)f->value;
    *p += f->len;
    return NULL;
}

static ss_status *sequence_add_tensor(ss_sequence *q, const uint8_t *bytes, size_t len)
{
    Onnx__TensorProto *tp = onnx__tensor_proto__unpack(NULL, len, bytes);
    if (!tp) return ss_errf(SS_ERR_INVALID, "a sequence element is not a TensorProto");
    ss_tensor view;
    ss_status *st = ss_onnx_tensor(NULL, tp, &view);
    if (!st) st = ss_sequence_insert(q, ss_sequence_len(q), &view);
    if (!st) ss_tensor_free(&view);
    onnx__tensor_proto__free_unpacked(tp, NULL);
    return st;
}

static ss_status *sequence_parse(const uint8_t *p, const uint8_t *end, ss_sequence *q)
{
    for (;;) {
        proto_field f = {0};
        bool more = false;
        ss_status *st = next_field(&p, end, &f, &more);
        if (st || !more) return st;
        if (f.field == 3 && f.bytes)
            st = sequence_add_tensor(q, f.bytes, f.len);
        else if (f.field != 1 && f.field != 2)
            st = ss_errf(SS_ERR_UNSUPPORTED, "only sequences of tensors are supported");
        if (st) return st;
    }
}

/* An OptionalProto: optional(tensor) as a marked sequence of 0/1 tensors, optional(seq) as the
 * sequence (*seq stays NULL when empty). */
static ss_status *optional_parse(const uint8_t *p, const uint8_t *end, ss_sequence **seq)
{
    for (;;) {
        proto_field f = {0};
        bool more = false;
        ss_status *st = next_field(&p, end, &f, &more);
        if (st || !more) return st;
        if ((f.field == 2 && f.value == 1) || (f.field == 3 && f.bytes)) {
            if (!*seq && !(*seq = ss_sequence_new(SS_DT_FLOAT32)))
                return ss_errf(SS_ERR_NOMEM, "out of memory");
            ss_sequence_mark_optional(*seq);
            if (f.field == 3) st = sequence_add_tensor(*seq, f.bytes, f.len);
        } else if (f.field == 5 && f.bytes) {
            if (!*seq && !(*seq = ss_sequence_new(SS_DT_FLOAT32)))
                return ss_errf(SS_ERR_NOMEM, "out of memory");
            st = sequence_parse(f.bytes, f.bytes + f.len, *seq);
        } else if (f.field != 1 && f.field != 2) {
            st = ss_errf(SS_ERR_UNSUPPORTED, "only optional tensors and sequences are supported");
        }
        if (st) return st;
    }
}

/* The SequenceProto (or OptionalProto) file at path as a new sequence, described by *t. */
static ss_status *read_sequence_file(const char *path, bool optional, ss_sequence **seq,
                                     ss_tensor *t)
{
    void *buf;
    size_t len;
    ss_status *st = ss_read_file(path, &buf, &len);
    if (st) return st;
    const uint8_t *p = buf, *end = p + len;
    if (optional)
        st = optional_parse(p, end, seq);
    else if (!(*seq = ss_sequence_new(SS_DT_FLOAT32)))
        st = ss_errf(SS_ERR_NOMEM, "out of memory");
    else
        st = sequence_parse(p, end, *seq);
    free(buf);
    if (!st) ss_sequence_tensor(*seq, t);
    return st ? ss_status_wrap(st, "%s", path) : NULL;
}

/* Is the graph input or output `name` declared optional(...)? */
static bool declared_optional(ss_session *s, const char *name)
{
    const Onnx__GraphProto *g = ss_session_model(s)->proto->graph;
    for (size_t i = 0; i < g->n_input + g->n_output; i++) {
        const Onnx__ValueInfoProto *v = i < g->n_input ? g->input[i] : g->output[i - g->n_input];
        if (v->name && !strcmp(v->name, name))
            return v->type && v->type->value_case == ONNX__TYPE_PROTO__VALUE_OPTIONAL_TYPE;
    }
    return false;
}

static ss_status *read_value_file(ss_session *s, const char *path, const ss_onnx_value_info *vi,
                                  ss_sequence **seq, ss_tensor *t)
{
    if (vi->dtype == SS_DT_SEQUENCE)
        return read_sequence_file(path, declared_optional(s, vi->name), seq, t);
    ss_status *st = ss_onnx_parse_tensor_file(path, t);
    if (!st) relabel_bfloat16(t, vi->dtype);
    return st;
}

static bool compare_value(const char *name, const ss_tensor *got, const ss_tensor *want, char *why,
                          size_t cap)
{
    const ss_sequence *g = ss_sequence_of(got), *w = ss_sequence_of(want);
    if (want->dtype == SS_DT_SEQUENCE && got->dtype == SS_DT_SEQUENCE && (!g || !w)) {
        if (!g && !w) return true; /* two empty optionals */
        snprintf(why, cap, "output '%s' is %s, expected %s", name, g ? "present" : "empty",
                 w ? "present" : "empty");
        return false;
    }
    if (!w || !g) return compare(name, got, want, why, cap);
    if (ss_sequence_len(g) != ss_sequence_len(w)) {
        snprintf(why, cap, "output '%s' has %d tensors, expected %d", name, ss_sequence_len(g),
                 ss_sequence_len(w));
        return false;
    }
    bool ok = true;
    for (int i = 0; ok && i < ss_sequence_len(w); i++)
        ok = compare(name, ss_sequence_at(g, i), ss_sequence_at(w, i), why, cap);
    return ok;
}

static ss_status *run_data_set(ss_session *s, const char *set_dir, bool *ok, char *why, size_t cap)
{
    ss_tensor ins[MAX_IO] = {0}, wants[MAX_IO] = {0};
    ss_sequence *seqs[2 * MAX_IO] = {0};
    int n_in = ss_session_num_inputs(s), n_out = ss_session_num_outputs(s);
    ss_status *st = NULL;
    if (n_in > MAX_IO || n_out > MAX_IO) return ss_errf(SS_ERR_LIMIT, "too many inputs or outputs");
    char path[4096];
    for (int i = 0; i < n_in && !st; i++) {
        snprintf(path, sizeof path, "%s/input_%d.pb", set_dir, i);
        st = read_value_file(s, path, ss_session_input(s, i), &seqs[i], &ins[i]);
    }
    for (int i = 0; i < n_out && !st; i++) {
        snprintf(path, sizeof path, "%s/output_%d.pb", set_dir, i);
        st = read_value_file(s, path, ss_session_output(s, i), &seqs[MAX_IO + i], &wants[i]);
    }
    /* A case whose own data contradicts its model's declared input shape is not a test of us
     * (onnx 1.12 ships a few: the bfloat16 CastLike cases). Say so and skip it. */
    for (int i = 0; i < n_in && !st; i++) {
        const ss_onnx_value_info *vi = ss_session_input(s, i);
        bool ok = vi->ndim < 0 || ins[i].ndim == vi->ndim;
        for (int d = 0; ok && d < vi->ndim; d++)
            ok = vi->dims[d] < 0 || vi->dims[d] == ins[i].dims[d];
        if (!ok) {
            char a[160], b[160];
            int64_t declared[SS_MAX_DIMS];
            for (int d = 0; d < vi->ndim; d++)
                declared[d] = vi->dims[d];
            snprintf(why, cap,
                     "the case's data for input '%s' has shape %s but its model declares %s",
                     vi->name, ss_shape_str(ins[i].ndim, ins[i].dims, a, sizeof a),
                     ss_shape_str(vi->ndim, declared, b, sizeof b));
            st = ss_errf(SS_ERR_INVALID, "%s", INCONSISTENT_CASE);
        }
    }
    const ss_tensor *outs = NULL;
    if (!st) st = ss_session_run(s, ins, n_in, &outs);
    *ok = !st;
    bool random = !st && draws_random(s);
    for (int i = 0; !st && i < n_out && *ok; i++)
        *ok = (random ? compare_draws : compare_value)(ss_session_output(s, i)->name, &outs[i],
                                                       &wants[i], why, cap);
    for (int i = 0; i < MAX_IO; i++)
        ss_tensor_free(&ins[i]), ss_tensor_free(&wants[i]);
    for (int i = 0; i < 2 * MAX_IO; i++)
        ss_sequence_free(seqs[i]);
    return st;
}

static void run_case(const char *dir, tally *t)
{
    const char *name = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    char path[4096], why[1024] = "";
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    ss_session *s = NULL;
    ss_status *st = ss_session_create(path, NULL, &s);
    if (st) {
        bool unsupported = st->code == SS_ERR_UNSUPPORTED;
        printf("%s %s: %s\n", unsupported ? "UNSUPPORTED" : "FAIL", name, st->msg);
        unsupported ? t->skipped++ : t->failed++;
        ss_status_free(st);
        return;
    }
    bool all_ok = true;
    int sets = 0;
    tol.max_err = 0;
    tol.any_float = false;
    for (int k = 0; k < 1000; k++) {
        snprintf(path, sizeof path, "%s/test_data_set_%d", dir, k);
        if (!is_dir(path)) break;
        sets++;
        bool ok = false;
        st = run_data_set(s, path, &ok, why, sizeof why);
        if (st && !strcmp(st->msg, INCONSISTENT_CASE)) {
            printf("SKIP %s: %s\n", name, why);
            t->skipped++;
            ss_status_free(st);
            ss_session_free(s);
            return;
        }
        if (st) {
            snprintf(why, sizeof why, "test_data_set_%d: %s", k, st->msg);
            bool unsupported = st->code == SS_ERR_UNSUPPORTED;
            ss_status_free(st);
            if (unsupported) {
                printf("UNSUPPORTED %s: %s\n", name, why);
                t->skipped++;
                ss_session_free(s);
                return;
            }
            ok = false;
        }
        if (!ok) {
            all_ok = false;
            break;
        }
    }
    if (sets == 0) snprintf(why, sizeof why, "no test_data_set_* folder"), all_ok = false;
    if (all_ok && draws_random(s))
        printf("PASS %s (random draws: dtype, shape and drawn values checked)\n", name);
    else if (all_ok && tol.any_float)
        printf("PASS %s (max abs error %.3g)\n", name, tol.max_err);
    else
        printf("%s %s%s%s\n", all_ok ? "PASS" : "FAIL", name, all_ok ? "" : ": ",
               all_ok ? "" : why);
    all_ok ? t->passed++ : t->failed++;
    ss_session_free(s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_tree(const char *dir, tally *t)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    if (file_exists(path)) {
        run_case(dir, t);
        return;
    }
    DIR *d = opendir(dir);
    if (!d) {
        printf("FAIL %s: not a test case folder\n", dir);
        t->failed++;
        return;
    }
    char **names = NULL;
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char **grown = realloc(names, (n + 1) * sizeof *names);
        char *name = grown ? strdup(e->d_name) : NULL;
        if (grown) names = grown;
        if (!name) { /* out of memory: the cases left out would go unreported */
            fprintf(stderr, "onnx-test: out of memory listing %s\n", dir);
            t->failed++;
            break;
        }
        names[n++] = name;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str); /* names is NULL in an empty folder */
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        if (is_dir(path)) run_tree(path, t);
        free(names[i]);
    }
    free(names);
}

/* --rtol/--atol/--atol-of-max at argv[*i] (advanced past its value); false on a bad option. */
static bool parse_tolerance(int argc, char **argv, int *i)
{
    const char *opt = argv[*i];
    double *dst = !strcmp(opt, "--rtol")          ? &tol.rtol
                  : !strcmp(opt, "--atol")        ? &tol.atol
                  : !strcmp(opt, "--atol-of-max") ? &tol.atol_of_max
                                                  : NULL;
    char *end = NULL;
    double v = dst && *i + 1 < argc ? strtod(argv[*i + 1], &end) : -1;
    if (!dst || !end || *end || end == argv[*i + 1] || !(v >= 0) || !isfinite(v)) {
        fprintf(stderr, "onnx-test: %s needs a non-negative number\n", opt);
        return false;
    }
    *dst = v;
    *i += 1;
    return true;
}

int cmd_onnx_test(int argc, char **argv)
{
    static const char usage[] =
        "usage: shardserve onnx-test [--rtol R] [--atol A] [--atol-of-max F] DIR...\n";
    if (argc < 2 || !strcmp(argv[1], "--help")) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    ss_log_set_level(SS_LOG_ERROR);
    tally t = {0};
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++)
        if (!parse_tolerance(argc, argv, &i)) return 2;
    if (i == argc) {
        fputs(usage, stderr);
        return 2;
    }
    for (; i < argc; i++)
        run_tree(argv[i], &t);
    printf("%d passed, %d failed, %d skipped\n", t.passed, t.failed, t.skipped);
    return t.failed ? 1 : 0;
}
