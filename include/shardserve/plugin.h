/*
 * plugin.h: the stable C ABI of C-function stages (servable.json "c_function" stages). A plugin is
 * a shared library that exports one function returning a descriptor; the server dlopens it when
 * the servable starts, calls init once per stage that names it, run for every batch of instances
 * that reaches the stage, and fini when the servable stops. This header is all a plugin needs: it
 * includes no other shardserve header and only <stddef.h>/<stdint.h>.
 *
 * Versioning. A plugin fills abi_version with the SS_PLUGIN_ABI_VERSION it was compiled against
 * and struct_size with sizeof(ss_plugin_descriptor). The server refuses a plugin whose version
 * differs from its own ("built for ABI version N, this server speaks M"). Within one version,
 * fields are only ever appended, never reordered or retyped.
 *
 * Data. A tensor is dtype (ONNX TensorProto numbering, below), shape, data pointer and byte size,
 * contiguous and row-major. Inputs point into the server's memory: read-only, valid during run()
 * only. A STRING/BYTES value is one element whose data are its bytes (not NUL-terminated) and
 * nbytes its length; BYTES marks what the client sent as bytes, and an output allocated as BYTES
 * goes back to the client as bytes. Outputs are allocated through batch->alloc_output, so the
 * server owns every byte it receives: a plugin never frees what it got or gave. Anything a plugin
 * mallocs itself it frees itself.
 *
 * Errors. init and run write a message into error[0, error_cap) (always NUL-terminated by the
 * plugin; the server gives at least 256 bytes). run():
 *   - fail_instance(batch, i, msg) fails one instance; the others go on. The client sees
 *     "Call <tag> Failed, method: '<m>', stage index(begin with 1): <k>, error msg: <msg>";
 *   - returning non-zero fails every instance not yet failed with the text in `error`;
 *   - an instance that neither failed nor received every output (or an output index out of
 *     range) is a broken plugin: the whole request fails, the servable keeps serving.
 *
 * Threads. run() may be called from several stage threads at once, with different batches, on the
 * same state when the descriptor sets SS_PLUGIN_THREAD_SAFE; otherwise the server serialises the
 * calls on one state. init and fini are never concurrent with anything on that state. run() must
 * not block for long: it holds a stage thread (the request timeout does not interrupt it). A
 * descriptor that also sets SS_PLUGIN_INLINE promises a run() of microseconds that never blocks:
 * the server then calls it on whichever thread holds the request (a front end's, or the worker's
 * as a model answers) instead of handing the batch to a stage thread, which saves a cross-thread
 * wake-up (~10 us on shared cores, more than a small stage costs). Servers that predate the flag
 * ignore it.
 */
#ifndef SHARDSERVE_PLUGIN_H
#define SHARDSERVE_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SS_PLUGIN_ABI_VERSION 1u
/* The symbol the server looks up when servable.json names none. */
#define SS_PLUGIN_DEFAULT_SYMBOL "shardserve_plugin"

/* Element types: ONNX TensorProto.DataType values (stable by ONNX's own rules). */
enum {
    SS_PLUGIN_FLOAT32 = 1,
    SS_PLUGIN_UINT8 = 2,
    SS_PLUGIN_INT8 = 3,
    SS_PLUGIN_UINT16 = 4,
    SS_PLUGIN_INT16 = 5,
    SS_PLUGIN_INT32 = 6,
    SS_PLUGIN_INT64 = 7,
    SS_PLUGIN_STRING = 8, /* one element: data = bytes, nbytes = length */
    SS_PLUGIN_BOOL = 9,
    SS_PLUGIN_FLOAT16 = 10,
    SS_PLUGIN_FLOAT64 = 11,
    SS_PLUGIN_UINT32 = 12,
    SS_PLUGIN_UINT64 = 13,
    SS_PLUGIN_BFLOAT16 = 16,
    /* Not ONNX's: a STRING that is bytes (MindSpore's MS_BYTES, REST {"b64": ...}), one element */
    SS_PLUGIN_BYTES = 0x108,
};

#define SS_PLUGIN_MAX_DIMS 8

typedef struct {
    const char *name; /* the stage's input name (as servable.json spells it) */
    int32_t dtype;    /* SS_PLUGIN_* */
    int32_t ndim;     /* 0..SS_PLUGIN_MAX_DIMS */
    const int64_t *dims;
    const void *data;
    uint64_t nbytes;
} ss_plugin_tensor;

typedef struct ss_plugin_batch ss_plugin_batch;

/* One call of run(): n_instances request instances, each with the stage's inputs in order. */
struct ss_plugin_batch {
    uint32_t n_instances;
    uint32_t n_inputs;
    uint32_t n_outputs;
    /* inputs[i * n_inputs + k]: input k of instance i */
    const ss_plugin_tensor *inputs;
    const char *const *output_names; /* n_outputs names, as servable.json declares them */
    /*
     * Output `output` of instance `instance`, shaped (ndim, dims): returns zeroed memory of the
     * shape's byte size (for SS_PLUGIN_STRING/BYTES: string_bytes bytes, one element, ndim 0 or
     * all dims 1), owned by the server. Call it (and fail_instance) only from the thread running
     * run(), before run() returns. NULL when an index is out of range, the output was already
     * allocated, the dtype or shape is invalid, or memory ran out.
     */
    void *(*alloc_output)(ss_plugin_batch *batch, uint32_t instance, uint32_t output, int32_t dtype,
                          int32_t ndim, const int64_t *dims, uint64_t string_bytes);
    /* Fail one instance with a message (copied); its outputs, if any, are dropped. */
    void (*fail_instance)(ss_plugin_batch *batch, uint32_t instance, const char *message);
};

/* Descriptor flags. */
#define SS_PLUGIN_THREAD_SAFE 1u
#define SS_PLUGIN_INLINE 2u /* run() is short and never blocks: it may run on any thread */

typedef struct {
    uint32_t abi_version; /* SS_PLUGIN_ABI_VERSION */
    uint32_t struct_size; /* sizeof(ss_plugin_descriptor) */
    const char *name;     /* for logs */
    uint32_t flags;       /* SS_PLUGIN_THREAD_SAFE, SS_PLUGIN_INLINE or 0 */
    /*
     * One stage's state from its "config" (JSON text, "{}" when absent) and the stage's input and
     * output names (the plugin may refuse counts it cannot serve). NULL with `error` filled
     * refuses to start the servable.
     */
    void *(*init)(const char *config_json, uint32_t n_inputs, const char *const *input_names,
                  uint32_t n_outputs, const char *const *output_names, char *error,
                  size_t error_cap);
    /* 0 on success (per-instance failures included), non-zero with `error` filled otherwise. */
    int (*run)(void *state, ss_plugin_batch *batch, char *error, size_t error_cap);
    void (*fini)(void *state);
} ss_plugin_descriptor;

/* What the exported symbol is: `const ss_plugin_descriptor *shardserve_plugin(void)`. The
 * descriptor must stay valid while the library is loaded (a static const is the usual form). */
typedef const ss_plugin_descriptor *(*ss_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif
#endif
