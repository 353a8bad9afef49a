"""`python3 -m shardserve_stages.export SERVABLE_DIR NAME`: import NAME/servable_config.py through the
mindspore_serving shim, as MindSpore's worker does, and print the servable in servable.json's form
(the methods as stage pipelines) on stdout. `shardserve serve` runs this once per servable folder
that has a servable_config.py and no servable.json. On failure it prints {"error": "..."} (with
MindSpore's texts) and exits 1. Notices (a .mindir served as its .onnx sibling) go to stderr."""
import importlib
import json
import os
import sys
import traceback

from mindspore_serving.server.register import _state


def fail(msg):
    print(json.dumps({"error": msg}))
    sys.exit(1)


def version_dirs(folder):
    return sorted((d for d in os.listdir(folder) if d.isdigit() and os.path.isdir(os.path.join(folder, d))), key=int)


def onnx_file(servable_dir, name, version, f):
    """The ONNX file serving declared model file f in one version directory (None: an error)."""
    vdir = os.path.join(servable_dir, name, version)
    path = os.path.join(vdir, f)
    if f.lower().endswith(".onnx") and os.path.isfile(path):
        return path, None
    sibling = os.path.splitext(path)[0] + ".onnx"
    if os.path.isfile(sibling):
        print("Serving: servable %s version %s: model file '%s' is served as its ONNX sibling %s"
              % (name, version, f, sibling), file=sys.stderr)
        return sibling, None
    return None, ("Load model failed, servable directory: '%s', servable name: '%s', model file: '%s', version "
                  "number %s, load error details: shardserve serves ONNX models: export '%s' to ONNX as %s"
                  % (servable_dir, name, f, version, f, sibling))


def check_model_files(servable_dir, name, model):
    versions = version_dirs(os.path.join(servable_dir, name))
    if not versions:
        fail("There is no valid version directory of models while there are models declared in servable_config.py, "
             "servable directory: %s, servable name: %s" % (servable_dir, name))
    if model.config_file is not None:
        fail("Load config file: %s failed, error details: not supported (MindSpore's mixed-precision config does not "
             "apply to ONNX models)" % model.config_file)
    if model.format == "om":
        fail("Not support device type Cpu and model type OM. shardserve serves ONNX models on CPUs")
    files = {}
    for v in versions:
        for f in model.files:
            path, err = onnx_file(servable_dir, name, v, f)
            if err:
                fail(err)
            files.setdefault(v, []).append(path)
    return files


def distributed_section(model, methods):
    rank_size, stage_size, pipeline = model.distributed or (1, 1, True)
    section = {"rank_size": rank_size, "stage_size": stage_size, "with_batch_dim": model.with_batch_dim,
               "enable_pipeline_infer": bool(pipeline)}
    first = next((s for m in methods for s in m["stages"] if s["kind"] == "model" and s["model"] == model.model_key),
                 None)
    if model.without_batch_dim_inputs and first:
        names = []
        for i in model.without_batch_dim_inputs:
            if i >= len(first["inputs"]):
                fail("The index %d of without_batch_dim_inputs is out of range: the model '%s' has %d inputs"
                     % (i, model.model_key, len(first["inputs"])))
            names.append(first["inputs"][i])
        section["without_batch_dim_inputs"] = names
    return section


def local_files(servable_dir, name, model):
    """The ONNX files of a local model's subgraphs, by version; their names in the version folder."""
    files = check_model_files(servable_dir, name, model)
    return files, [os.path.basename(f) for f in next(iter(files.values()))]


def export(servable_dir, name):
    sys.path.insert(0, os.path.abspath(servable_dir))
    try:
        importlib.import_module("%s.servable_config" % name)
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        fail("import %s.servable_config failed, %s" % (name, e))
    models = _state.models + ([_state.distributed] if _state.distributed else [])
    if not _state.methods:
        fail("There is no method registered for servable")
    if not models:
        fail("There is no model declared in servable_config.py of servable '%s' (shardserve needs one)" % name)
    methods = list(_state.methods.values())
    if len(models) == 1:  # servable.json's one-model form: the model is named after the servable
        model = models[0]
        out = {"distributed": distributed_section(model, methods), "methods": methods}
        for stage in (s for m in methods for s in m["stages"] if s["kind"] == "model"):
            stage["model"] = name
        if model.distributed is None:
            out["model_files"], out["files"] = local_files(servable_dir, name, model)
            out["model_key"] = model.model_key
        return out
    declared = []  # several local models (MindSpore allows no distributed one beside them)
    for model in models:
        _, files = local_files(servable_dir, name, model)
        declared.append({"name": model.model_key, "files": files, "distributed": distributed_section(model, methods)})
    return {"models": declared, "methods": methods}


def main():
    servable_dir, name = sys.argv[1], sys.argv[2]
    print(json.dumps(export(servable_dir, name)))


if __name__ == "__main__":
    main()
