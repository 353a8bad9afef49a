/* ONNX loading: inline and external weights, and a clear error for every kind of bad file. */
#include "check.h"
#include "shardserve/onnx.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char path_buf[4096];
static const char *fixture(const char *rel)
{
    snprintf(path_buf, sizeof path_buf, "%s/%s", test_argv[1], rel);
    return path_buf;
}

static void loads_inline_weights(void)
{
    ss_onnx_model *m = NULL;
    CHECK_OK(ss_onnx_load(fixture("good.onnx"), &m));
    if (!m) return;
    CHECK(ss_onnx_opset(m, "") == 13);
    CHECK(ss_onnx_opset(m, "ai.onnx") == 13);
    CHECK(ss_onnx_opset(m, "ai.shardserve") == 0);
    const ss_tensor *w = ss_onnx_find_init(m, "W");
    CHECK(w && w->dtype == SS_DT_FLOAT32 && w->ndim == 2 && w->dims[0] == 96 && w->dims[1] == 16);
    if (w) CHECK(((const float *)w->data)[95 * 16 + 15] == 0.5f);
    CHECK(m->external_bytes == 0);
    ss_onnx_value_info vi;
    CHECK_OK(ss_onnx_read_value_info(m->proto->graph->input[0], &vi));
    CHECK(vi.is_tensor && vi.ndim == 2 && vi.dims[0] == 128 && vi.dtype == SS_DT_FLOAT32);
    ss_onnx_free(m);
}

static void maps_external_weights(void)
{
    ss_onnx_model *m = NULL;
    CHECK_OK(ss_onnx_load(fixture("ext/good_ext.onnx"), &m));
    if (!m) return;
    const ss_tensor *w = ss_onnx_find_init(m, "W");
    CHECK(w && w->nbytes == 96 * 16 * 4);
    CHECK(m->n_maps == 1 && m->external_bytes == 96 * 16 * 4);
    /* the bytes live inside the mapping, not in a copy */
    if (w && m->n_maps == 1) {
        const char *base = m->maps[0].base;
        CHECK((const char *)w->data >= base &&
              (const char *)w->data + w->nbytes <= base + m->maps[0].len);
        CHECK(((const float *)w->data)[0] == 0.5f);
    }
    ss_onnx_free(m);
}

/* SHARDSERVE_WEIGHTS=resident: the same bytes in anonymous memory starting on a 2 MiB boundary
 * (huge pages for the kernels that stream them); freed whole by ss_onnx_free (ASan checks). */
static void resident_weights_on_2mib_boundary(void)
{
    setenv("SHARDSERVE_WEIGHTS", "resident", 1);
    ss_onnx_model *m = NULL;
    CHECK_OK(ss_onnx_load(fixture("ext/good_ext.onnx"), &m));
    unsetenv("SHARDSERVE_WEIGHTS");
    if (!m) return;
    const ss_tensor *w = ss_onnx_find_init(m, "W");
    CHECK(w && w->nbytes == 96 * 16 * 4 && m->n_maps == 1);
    if (w && m->n_maps == 1) {
        CHECK((uintptr_t)m->maps[0].base % ((uintptr_t)2 << 20) == 0);
        for (int i = 0; i < 96 * 16; i++)
            if (((const float *)w->data)[i] != 0.5f) {
                CHECK(!"resident weights differ from the file");
                break;
            }
    }
    ss_onnx_free(m);
}

/* A model that keeps a large initializer inside the .onnx: its raw_data (which the tensor
 * borrows) starts on a 2 MiB boundary, where transparent huge pages can back it; a small one
 * loads as before. The model is built and packed here with protobuf-c. */
static void large_inline_weights_on_2mib_boundary(void)
{
    enum { BIG = (2 << 20) / 4 + 16, SMALL = 16 }; /* floats: just over 2 MiB, and 64 bytes */
    float *big = malloc(BIG * sizeof *big), small[SMALL];
    CHECK(big != NULL);
    if (!big) return;
    for (int i = 0; i < BIG; i++)
        big[i] = (float)(i % 1000) * 0.25f;
    for (int i = 0; i < SMALL; i++)
        small[i] = (float)-i;
    Onnx__TensorProto t[2];
    Onnx__TensorProto *inits[2] = {&t[0], &t[1]};
    int64_t dims[2][1] = {{BIG}, {SMALL}};
    const char *names[2] = {"big", "small"};
    for (int i = 0; i < 2; i++) {
        onnx__tensor_proto__init(&t[i]);
        t[i].name = (char *)names[i];
        t[i].has_data_type = 1;
        t[i].data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        t[i].n_dims = 1;
        t[i].dims = dims[i];
        t[i].has_raw_data = 1;
        t[i].raw_data.data = (uint8_t *)(i ? small : big);
        t[i].raw_data.len = (i ? SMALL : BIG) * sizeof(float);
    }
    Onnx__GraphProto g;
    onnx__graph_proto__init(&g);
    g.name = "g";
    g.n_initializer = 2;
    g.initializer = inits;
    Onnx__OperatorSetIdProto op;
    onnx__operator_set_id_proto__init(&op);
    op.has_version = 1;
    op.version = 13;
    Onnx__OperatorSetIdProto *ops[1] = {&op};
    Onnx__ModelProto mp;
    onnx__model_proto__init(&mp);
    mp.has_ir_version = 1;
    mp.ir_version = 8;
    mp.graph = &g;
    mp.n_opset_import = 1;
    mp.opset_import = ops;
    size_t len = onnx__model_proto__get_packed_size(&mp);
    uint8_t *buf = malloc(len);
    ss_onnx_model *m = NULL;
    if (buf) {
        onnx__model_proto__pack(&mp, buf);
        CHECK_OK(ss_onnx_load_buffer(buf, len, "inline.onnx", NULL, &m));
    }
    const ss_tensor *b = m ? ss_onnx_find_init(m, "big") : NULL;
    const ss_tensor *sm = m ? ss_onnx_find_init(m, "small") : NULL;
    CHECK(b && b->nbytes == BIG * sizeof(float) && sm && sm->nbytes == sizeof small);
    if (b && sm) {
        CHECK((uintptr_t)b->data % ((uintptr_t)2 << 20) == 0);
        CHECK(memcmp(b->data, big, b->nbytes) == 0 && memcmp(sm->data, small, sizeof small) == 0);
    }
    ss_onnx_free(m);
    free(buf);
    free(big);
}

static void symbolic_dims(void)
{
    ss_onnx_model *m = NULL;
    CHECK_OK(ss_onnx_load(fixture("dynamic.onnx"), &m));
    if (!m) return;
    ss_onnx_value_info vi;
    CHECK_OK(ss_onnx_read_value_info(m->proto->graph->input[0], &vi));
    CHECK(vi.ndim == 2 && vi.dims[0] == -1 && vi.dim_names[0] && !strcmp(vi.dim_names[0], "N"));
    ss_onnx_free(m);
}

static void bad_files_give_clear_errors(void)
{
    ss_onnx_model *m = NULL;
    CHECK_ERR(ss_onnx_load(fixture("does-not-exist.onnx"), &m), "cannot open model");
    CHECK_ERR(ss_onnx_load(fixture("empty.onnx"), &m), "empty file");
    CHECK_ERR(ss_onnx_load(fixture("truncated.onnx"), &m), "not an ONNX model");
    CHECK_ERR(ss_onnx_load(fixture("text.onnx"), &m), "not an ONNX model");
    CHECK_ERR(ss_onnx_load(fixture("random.onnx"), &m), "random.onnx");
    CHECK_ERR(ss_onnx_load(fixture("missing/model.onnx"), &m), "weights.data");
    CHECK_ERR(ss_onnx_load(fixture("short/model.onnx"), &m), "too short");
    CHECK_ERR(ss_onnx_load(fixture("escape/model.onnx"), &m), "escapes the model's folder");
    CHECK_ERR(ss_onnx_load(fixture("absolute/model.onnx"), &m), "absolute");
    CHECK_ERR(ss_onnx_load(fixture("badoffset/model.onnx"), &m), "not a number");
    CHECK(m == NULL);
}

/* External data that is a FIFO (or a device) is refused without a blocking open: a FIFO would
 * wait for a writer forever. Made here, not among the shared fixtures, which other tools read. */
static void external_data_must_be_a_regular_file(void)
{
    char dir[] = "/tmp/ss-onnx-fifo-XXXXXX", model[256], data[256];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(model, sizeof model, "%s/model.onnx", dir);
    snprintf(data, sizeof data, "%s/weights.data", dir);
    void *bytes = NULL;
    size_t len = 0;
    CHECK_OK(
        ss_read_file(fixture("missing/model.onnx"), &bytes, &len)); /* refers to weights.data */
    FILE *f = fopen(model, "wb");
    CHECK(f && fwrite(bytes, 1, len, f) == len);
    if (f) fclose(f);
    free(bytes);
    CHECK(mkfifo(data, 0600) == 0);
    ss_onnx_model *m = NULL;
    CHECK_ERR(ss_onnx_load(model, &m), "is not a regular file");
    unlink(data);
    unlink(model);
    rmdir(dir);
    CHECK(m == NULL);
}

static void tensor_file_errors(void)
{
    ss_tensor t;
    CHECK_ERR(ss_onnx_parse_tensor_file(fixture("text.onnx"), &t), "TensorProto");
    CHECK_ERR(ss_onnx_parse_tensor_file(fixture("nope.pb"), &t), "cannot open");
}

TEST_MAIN(TEST(loads_inline_weights), TEST(maps_external_weights),
          TEST(resident_weights_on_2mib_boundary), TEST(large_inline_weights_on_2mib_boundary),
          TEST(symbolic_dims), TEST(external_data_must_be_a_regular_file),
          TEST(bad_files_give_clear_errors), TEST(tensor_file_errors))
