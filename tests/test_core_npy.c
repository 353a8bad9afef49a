/*
 * .npy reading and writing against numpy. tests/npy/gen_npy.py (a CTest fixture) writes good
 * files of every dtype, rank 0..8, empty dims and format versions 1.0/2.0/3.0, each with a .raw
 * dump of its bytes, plus bad files. This test:
 *   - reads each good file and compares dtype, shape and bytes with the dump,
 *   - writes it back with ss_npy_write as c_NAME.npy (numpy checks those afterwards, in
 *     test_core_npy_numpy_reads_c) and reads that back itself,
 *   - expects each bad file to fail with a message naming the file and the reason,
 *   - feeds truncated and corrupted variants to the parser, which must never crash (run it
 *     under the SS_SANITIZE build too).
 */
#include "check.h"

#include <limits.h>

static const char *dir(void)
{
    const char *d = getenv("SS_CORE_NPY_DIR");
    return d ? d : "";
}

/* Without the generated files every case fails once, loudly, instead of passing vacuously. */
static bool have_dir(void)
{
    CHECK_MSG(dir()[0], "SS_CORE_NPY_DIR is not set (run through ctest, which generates it)");
    return dir()[0] != 0;
}

static void path_of(char *buf, size_t cap, const char *prefix, const char *name, const char *ext)
{
    snprintf(buf, cap, "%s/%s%s%s", dir(), prefix, name, ext);
}

typedef struct {
    char kind[8], name[96], dtype[16];
    int ndim;
    int64_t dims[SS_MAX_DIMS];
} manifest_line;

/* Reads DIR/manifest.txt; returns the number of lines (0 after reporting a failure). */
static int read_manifest(manifest_line *lines, int cap)
{
    char path[PATH_MAX];
    path_of(path, sizeof path, "", "manifest", ".txt");
    FILE *f = fopen(path, "r");
    CHECK_MSG(f != NULL, "cannot open %s (SS_CORE_NPY_DIR=%s; run through ctest)", path, dir());
    if (!f) return 0;
    int n = 0;
    char text[512];
    while (n < cap && fgets(text, sizeof text, f)) {
        manifest_line *l = &lines[n];
        memset(l, 0, sizeof *l);
        int used = 0;
        if (sscanf(text, "%7s %95s%n", l->kind, l->name, &used) < 2) continue;
        if (strcmp(l->kind, "good") == 0) {
            const char *p = text + used;
            int k = 0;
            if (sscanf(p, "%15s %d%n", l->dtype, &l->ndim, &k) != 2) continue;
            p += k;
            for (int i = 0; i < l->ndim && i < SS_MAX_DIMS; i++) {
                long long d;
                if (sscanf(p, "%lld%n", &d, &k) != 1) break;
                l->dims[i] = d;
                p += k;
            }
        }
        n++;
    }
    fclose(f);
    CHECK_MSG(n > 0, "%s is empty", path);
    return n;
}

static manifest_line lines[512];
static int n_lines;

static bool load_manifest(void)
{
    if (!have_dir()) return false;
    if (!n_lines) n_lines = read_manifest(lines, (int)(sizeof lines / sizeof lines[0]));
    return n_lines > 0;
}

static void check_good(const manifest_line *l)
{
    char npy[PATH_MAX], raw[PATH_MAX], back[PATH_MAX];
    path_of(npy, sizeof npy, "", l->name, ".npy");
    path_of(raw, sizeof raw, "", l->name, ".raw");
    path_of(back, sizeof back, "c_", l->name, ".npy");
    ss_tensor t, again;
    void *want = NULL;
    size_t want_len = 0;
    ss_status *st = ss_npy_read(npy, &t);
    CHECK_MSG(st == NULL, "%s", st ? st->msg : "");
    if (st) {
        ss_status_free(st);
        return;
    }
    CHECK_OK(ss_read_file(raw, &want, &want_len));
    CHECK_MSG(strcmp(ss_dtype_name(t.dtype), l->dtype) == 0, "%s: dtype %s, want %s", npy,
              ss_dtype_name(t.dtype), l->dtype);
    CHECK_MSG(ss_shape_equal(t.ndim, t.dims, l->ndim, l->dims), "%s: shape differs", npy);
    CHECK_MSG(t.storage == SS_STORE_OWNED, "%s: storage %d", npy, (int)t.storage);
    CHECK_MSG(t.nbytes == want_len && (want_len == 0 || memcmp(t.data, want, want_len) == 0),
              "%s: data differs from %s", npy, raw);

    CHECK_OK(ss_npy_write(back, &t));
    CHECK_OK(ss_npy_read(back, &again));
    CHECK_MSG(again.dtype == t.dtype && ss_shape_equal(again.ndim, again.dims, t.ndim, t.dims) &&
                  again.nbytes == t.nbytes &&
                  (t.nbytes == 0 || memcmp(again.data, t.data, t.nbytes) == 0),
              "%s: C round trip differs", back);
    ss_tensor_free(&again);
    ss_tensor_free(&t);
    free(want);
}

static void good_files(void)
{
    if (!load_manifest()) return;
    int good = 0;
    for (int i = 0; i < n_lines; i++)
        if (strcmp(lines[i].kind, "good") == 0) {
            check_good(&lines[i]);
            good++;
        }
    /* 12 dtypes x 7 shapes, three shapes also in versions 2.0 and 3.0 */
    CHECK_MSG(good >= 12 * 7 + 12 * 3 * 2, "only %d good files", good);
    printf("read %d good npy files from %s and wrote each back\n", good, dir());
}

/* Each bad file and what its error must say besides the file's path. */
static const struct {
    const char *name, *reason;
    ss_code code;
} bad[] = {
    {"bad_fortran", "Fortran-order npy arrays are not supported", SS_ERR_UNSUPPORTED},
    {"bad_bigendian", "big-endian npy data ('>f4')", SS_ERR_UNSUPPORTED},
    {"bad_bigendian_i8", "big-endian npy data ('>i8')", SS_ERR_UNSUPPORTED},
    {"bad_object", "object arrays are not supported", SS_ERR_UNSUPPORTED},
    {"bad_structured", "structured dtypes are not supported", SS_ERR_INVALID},
    {"bad_complex", "dtype '<c8' is not supported", SS_ERR_UNSUPPORTED},
    {"bad_unicode", "dtype '<U2' is not supported", SS_ERR_UNSUPPORTED},
    {"bad_datetime", "dtype '<M8[D]' is not supported", SS_ERR_UNSUPPORTED},
    {"bad_truncated_header", "truncated npy header", SS_ERR_INVALID},
    {"bad_truncated_preamble", "truncated npy header (file is only 9 bytes)", SS_ERR_INVALID},
    {"bad_truncated_data", "truncated npy data: 21 bytes, but shape [2,3] of float32 needs 24",
     SS_ERR_INVALID},
    {"bad_truncated_data_v2", "truncated npy data: 23 bytes", SS_ERR_INVALID},
    {"bad_extra_data", "5 trailing bytes", SS_ERR_INVALID},
    {"bad_bad_magic", "not an npy file (bad magic)", SS_ERR_INVALID},
    {"bad_text_file", "not an npy file (bad magic)", SS_ERR_INVALID},
    {"bad_empty", "empty file", SS_ERR_INVALID},
    {"bad_absurd_header_len", "header length 4294967280", SS_ERR_INVALID},
    {"bad_absurd_header_len_v1", "header length 65535", SS_ERR_INVALID},
    {"bad_dims_overflow", "[1099511627776,1099511627776,1099511627776] has too many elements",
     SS_ERR_LIMIT},
    {"bad_dims_overflow_zero", "has too many elements", SS_ERR_LIMIT},
    {"bad_dim_too_big", "dim out of range", SS_ERR_INVALID},
    {"bad_huge_shape", "truncated npy data: 16 bytes, but shape [1099511627776]", SS_ERR_INVALID},
    {"bad_negative_dim", "malformed npy 'shape'", SS_ERR_INVALID},
    {"bad_too_many_dims", "more than 8 dims", SS_ERR_LIMIT},
    {"bad_version9", "npy format version 9.0 is not supported", SS_ERR_UNSUPPORTED},
    {"bad_version0", "npy format version 0.0 is not supported", SS_ERR_UNSUPPORTED},
    {"bad_no_descr", "no 'descr'", SS_ERR_INVALID},
    {"bad_descr_no_order", "'f4' has no byte-order mark", SS_ERR_INVALID},
    {"bad_shape_list", "no 'shape' tuple", SS_ERR_INVALID},
    {"bad_fortran_garbage", "malformed npy 'fortran_order'", SS_ERR_INVALID},
    {"bad_header_nul", "no 'descr'", SS_ERR_INVALID},
    {"bad_unterminated_descr", "malformed npy 'descr'", SS_ERR_INVALID},
    {"bad_unterminated_shape", "malformed npy 'shape'", SS_ERR_INVALID},
};

static void bad_files(void)
{
    if (!load_manifest()) return;
    size_t n_bad = sizeof bad / sizeof bad[0];
    for (size_t i = 0; i < n_bad; i++) {
        char path[PATH_MAX];
        path_of(path, sizeof path, "", bad[i].name, ".npy");
        ss_tensor t;
        memset(&t, 0x5a, sizeof t);
        ss_status *st = ss_npy_read(path, &t);
        CHECK_MSG(st != NULL, "%s: read succeeded", path);
        if (!st) {
            ss_tensor_free(&t);
            continue;
        }
        CHECK_MSG(strstr(st->msg, path) != NULL, "\"%s\" does not name the file", st->msg);
        CHECK_MSG(strstr(st->msg, bad[i].reason) != NULL, "\"%s\" lacks \"%s\"", st->msg,
                  bad[i].reason);
        CHECK_MSG(st->code == bad[i].code, "%s: code %s, want %s", path, ss_code_name(st->code),
                  ss_code_name(bad[i].code));
        CHECK_MSG(t.data == NULL && t.storage == SS_STORE_NONE, "%s: output not left empty", path);
        ss_status_free(st);
    }
    /* Every bad file the generator wrote has an expectation here. */
    int listed = 0;
    for (int i = 0; i < n_lines; i++) {
        if (strcmp(lines[i].kind, "bad")) continue;
        listed++;
        bool known = false;
        for (size_t k = 0; k < n_bad; k++)
            known |= strcmp(bad[k].name, lines[i].name) == 0;
        CHECK_MSG(known, "%s has no expected error in this test", lines[i].name);
    }
    printf("checked the errors for %zu bad npy files\n", n_bad);
    CHECK_MSG(listed == (int)n_bad, "manifest lists %d bad files, this test knows %zu", listed,
              n_bad);
}

static void missing_and_unwritable(void)
{
    if (!have_dir()) return;
    ss_tensor t;
    CHECK_ERR(ss_npy_read("/nonexistent/x.npy", &t), "cannot open /nonexistent/x.npy");
    CHECK_ERR(ss_npy_read(dir(), &t), "is not a regular file");
    CHECK_ERR(ss_npy_parse("", 0, "request input 'x'", &t), "request input 'x': empty file");

    CHECK_OK(ss_tensor_alloc(&t, SS_DT_FLOAT32, 1, (int64_t[]){2}));
    CHECK_ERR(ss_npy_write("/nonexistent/dir/out.npy", &t),
              "cannot create /nonexistent/dir/out.npy");
    ss_tensor_free(&t);
    char path[PATH_MAX];
    path_of(path, sizeof path, "", "c_unwritable", ".npy");
    CHECK_OK(ss_tensor_alloc(&t, SS_DT_BFLOAT16, 1, (int64_t[]){2}));
    CHECK_ERR(ss_npy_write(path, &t), "cannot write bfloat16 tensors as npy");
    ss_tensor_free(&t);
    CHECK_OK(ss_tensor_alloc(&t, SS_DT_STRING, 1, (int64_t[]){2}));
    CHECK_ERR(ss_npy_write(path, &t), "cannot write string tensors as npy");
    ss_tensor_free(&t);
}

/* The parser sees every prefix of a file and single-byte corruptions of its header: whatever it
 * answers, it must not read out of bounds (ASan) or leak, and success must be self-consistent. */
static int parse_variant(const unsigned char *buf, size_t len)
{
    ss_tensor t;
    ss_status *st = ss_npy_parse(buf, len, "fuzz", &t);
    if (st) {
        bool named = strncmp(st->msg, "fuzz: ", 6) == 0;
        CHECK_MSG(named, "error without the input's name: %s", st->msg);
        ss_status_free(st);
        return 0;
    }
    int64_t n = ss_tensor_numel(&t);
    CHECK(n >= 0 && (size_t)n * ss_dtype_size(t.dtype) == t.nbytes && t.nbytes <= len);
    ss_tensor_free(&t);
    return 1;
}

static void corrupted_inputs_do_not_crash(void)
{
    if (!load_manifest()) return;
    static const char *seeds[] = {"good_float32_3d_v1", "good_int64_0d_v2", "good_bool_8d_v1",
                                  "good_uint16_empty3_v3"};
    static const unsigned char bytes[] = {0,   1,   0x7f, 0x80, 0xff, '\'', '(', ')', ',', ':', ' ',
                                          '9', '-', '{',  '}',  '\n', 'T',  'F', '<', '>', '|'};
    uint32_t rng = 12345;
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        char path[PATH_MAX];
        path_of(path, sizeof path, "", seeds[s], ".npy");
        unsigned char *orig;
        size_t len;
        ss_status *st = ss_read_file(path, (void **)&orig, &len);
        CHECK_MSG(st == NULL, "%s", st ? st->msg : "");
        if (st) {
            ss_status_free(st);
            continue;
        }
        int ok = 0;
        for (size_t cut = 0; cut <= len; cut++) {
            /* a fresh exact-size copy so ASan sees any read past the end */
            unsigned char *copy = malloc(cut ? cut : 1);
            memcpy(copy, orig, cut);
            ok += parse_variant(copy, cut);
            free(copy);
        }
        CHECK_MSG(ok == 1, "%s: %d prefixes parsed, only the whole file should", seeds[s], ok);
        size_t hdr_end = len < 140 ? len : 140;
        unsigned char *copy = malloc(len);
        for (size_t pos = 0; pos < hdr_end; pos++)
            for (size_t b = 0; b < sizeof bytes; b++) {
                memcpy(copy, orig, len);
                copy[pos] = bytes[b];
                parse_variant(copy, len);
            }
        for (int iter = 0; iter < 3000; iter++) {
            memcpy(copy, orig, len);
            for (int k = 0; k < 4; k++) {
                rng = rng * 1664525u + 1013904223u;
                copy[(rng >> 8) % hdr_end] = bytes[(rng >> 20) % sizeof bytes];
            }
            parse_variant(copy, len);
        }
        free(copy);
        free(orig);
    }
}

TEST_MAIN(TEST(good_files), TEST(bad_files), TEST(missing_and_unwritable),
          TEST(corrupted_inputs_do_not_crash))
