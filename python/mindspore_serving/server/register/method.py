"""register_method and add_stage (MindSpore's register/method.py): the method body runs once, at
import, with placeholders; each add_stage records a stage and returns placeholders for its outputs.
The older call_preprocess/call_servable/call_postprocess forms take their output counts from the
method's source (ast), as MindSpore does, with its order and complex-statement errors."""
import ast
import inspect
import os
import textwrap

from . import _state
from .model import Model
from .utils import check_int, check_str, check_str_list, deprecated, servable_name

CALL_NAMES = ("call_preprocess", "call_preprocess_pipeline", "call_servable", "call_postprocess",
              "call_postprocess_pipeline")


class _TensorDef:
    """A placeholder: output `index` of stage `stage` (0 = the method's inputs) of one method."""

    def __init__(self, method, stage, index):
        self.method, self.stage, self.index = method, stage, index


class _MethodDef:
    def __init__(self, name, inputs):
        self.name, self.inputs, self.stages = name, inputs, []
        self.ast_counts = None  # output counts of the call_* statements, in order
        self.calls = []         # the call_* forms seen: "preprocess", "servable", "postprocess"


_current = None


def registered_function(key):
    entry = _state.functions.get(key)
    return entry[0] if entry else None


def _value_name(method, ph):
    return method.inputs[ph.index] if ph.stage == 0 else "stage%d.output%d" % (ph.stage, ph.index)


def _check_placeholder(ph, method, what):
    if not isinstance(ph, _TensorDef) or ph.method is not method:
        raise RuntimeError("Each value %s is a placeholder for data and must come from the method inputs or "
                           "the outputs of add_stage" % what)
    return _value_name(method, ph)


def _model_stage(method, model, inputs, outputs_count):
    if model not in _state.models and model is not _state.distributed:
        raise RuntimeError("Check failed in method '%s', the parameter 'stage' of add_stage must be function or "
                           "Model returned by declare_model, and ensure that interface 'declare_model' can take "
                           "effect when importing servable_config.py by the serving server" % method.name)
    old = _state.model_io.setdefault(model.model_key, (len(inputs), outputs_count))
    for what, new, was in (("inputs", len(inputs), old[0]), ("outputs", outputs_count, old[1])):
        if new != was:
            raise RuntimeError("RegisterInputOutputInfo failed, %s count %d not match old count %d, model: %s"
                               % (what, new, was, model.model_key))
    return {"kind": "model", "model": model.model_key, "tag": "Model '%s'" % model.model_key}


def _function_stage(method, fn, n_args, batch_size):
    key = "%s.%s" % (servable_name(), fn.__name__)
    batched = batch_size is not None
    if not batched:
        n_params = len(inspect.signature(fn).parameters)
        if n_params != n_args:
            raise RuntimeError("function %s input args count %d not match the count %d registered in method"
                               % (fn.__name__, n_params, n_args))
    old = _state.functions.setdefault(key, (fn, n_args, batched))
    if old[1] != n_args:
        raise RuntimeError("Stage function '%s' inputs count %d not match last registered count %d, method name "
                           "'%s'" % (key, n_args, old[1], method.name))
    if old[2] != batched:
        raise RuntimeError("Failed to add stage function %s: parameter 'batch_size' in multiple 'add_stage' should "
                           "be enabled or disabled consistently" % key)
    stage = {"kind": "python_function", "module": "servable_config.py", "function": fn.__name__}
    if batched:
        stage["batch_size"] = batch_size
    return stage


def _builtin_stage(name, n_args, outputs_count):
    """MindSpore's registered C++ functions: "argmax_cpp" (1 -> 1), served by shardserve_stages.builtin."""
    if name != "argmax_cpp":
        raise RuntimeError("Function '%s' is not defined" % name)
    if n_args != 1 or outputs_count != 1:
        raise RuntimeError("Function 'argmax_cpp' takes 1 input and gives 1 output, not %d and %d"
                           % (n_args, outputs_count))
    import shardserve_stages.builtin as builtin
    return {"kind": "python_function", "module": os.path.abspath(builtin.__file__), "function": name,
            "tag": "Function '%s'" % name}


def add_stage(stage, *args, outputs_count, batch_size=None, tag=None):
    method = _current
    if method is None:
        raise RuntimeError("add_stage should be invoked inside a method decorated by register_method")
    inputs = [_check_placeholder(a, method, "of parameter *args") for a in args]
    if tag is not None:
        check_str("tag", tag)
    if batch_size is not None:
        check_int("batch_size", batch_size, 0)
    if isinstance(stage, Model):
        desc = _model_stage(method, stage, inputs, outputs_count)
    elif isinstance(stage, str):
        desc = _builtin_stage(stage, len(args), outputs_count)
    elif inspect.isfunction(stage):
        desc = _function_stage(method, stage, len(args), batch_size)
    else:
        raise RuntimeError("Check failed in method '%s', the parameter 'stage' of add_stage must be function or "
                           "Model returned by declare_model, now is %s" % (method.name, type(stage)))
    k = len(method.stages) + 1
    if tag is not None:
        desc["tag"] = tag
    desc["inputs"] = inputs
    desc["outputs"] = ["stage%d.output%d" % (k, j) for j in range(outputs_count)]
    method.stages.append(desc)
    outs = tuple(_TensorDef(method, k, j) for j in range(outputs_count))
    return outs[0] if outputs_count == 1 else outs


# ---------------------------------------------------------------- the older call_* forms

def _is_call(node):
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Name) and node.func.id in CALL_NAMES) or
        (isinstance(node.func, ast.Attribute) and node.func.attr in CALL_NAMES))


def _ast_counts(fn, name):
    """Output counts of the top-level call_* assignments, or None when the method uses none."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.FunctionDef) else []
    if not any(_is_call(n) for stmt in body for n in ast.walk(stmt)):
        return None
    counts = []
    names = ", ".join(CALL_NAMES)
    for stmt in body:
        if isinstance(stmt, ast.Assign) and _is_call(stmt.value):
            target = stmt.targets[0]
            counts.append(len(target.elts) if isinstance(target, (ast.Tuple, ast.List)) else 1)
        elif isinstance(stmt, (ast.Return, ast.Expr)) or (isinstance(stmt, ast.Assign) and not
                                                            isinstance(stmt.value, ast.Call)):
            continue
        else:
            raise RuntimeError("Failed to parse method '%s', complex statements such as conditions and loops are not "
                               "supported in register_method when the interface '%s' is used, use 'add_stage' to "
                               "replace '%s'" % (name, names, names))
    return counts


def _older_stage(form, stage, args, batch_size, tag):
    method = _current
    if method is None or method.ast_counts is None or len(method.calls) >= len(method.ast_counts):
        names = ", ".join(CALL_NAMES)
        raise RuntimeError("Failed to parse method '%s', complex statements such as conditions and loops are not "
                           "supported in register_method when the interface '%s' is used, use 'add_stage' to "
                           "replace '%s'" % (method.name if method else "", names, names))
    seen = method.calls
    if form == "preprocess" and "preprocess" in seen:
        raise RuntimeError("call_preprocess or call_preprocess_pipeline should not be invoked more than once")
    if form == "preprocess" and "servable" in seen:
        raise RuntimeError("call_servable should be invoked after call_preprocess")
    if form == "servable" and "servable" in seen:
        raise RuntimeError("call_servable should not be invoked more than once")
    if form == "servable" and "postprocess" in seen:
        raise RuntimeError("call_postprocess or call_postprocess_pipeline should be invoked after call_servable")
    if form == "postprocess" and "postprocess" in seen:
        raise RuntimeError("call_postprocess or call_postprocess_pipeline should not be invoked more than once")
    if form == "postprocess" and "servable" not in seen:
        raise RuntimeError("call_postprocess or call_postprocess_pipeline should be invoked after call_servable")
    count = method.ast_counts[len(seen)]
    seen.append(form)
    return add_stage(stage, *args, outputs_count=count, batch_size=batch_size, tag=tag)


def call_preprocess(preprocess_fun, *args):
    deprecated("call_preprocess", "1.5.0", "add_stage")
    return _older_stage("preprocess", preprocess_fun, args, None, "Preprocess")


def call_preprocess_pipeline(preprocess_fun, *args):
    deprecated("call_preprocess_pipeline", "1.5.0", "add_stage")
    return _older_stage("preprocess", preprocess_fun, args, 0, "Preprocess")


def call_postprocess(postprocess_fun, *args):
    deprecated("call_postprocess", "1.5.0", "add_stage")
    return _older_stage("postprocess", postprocess_fun, args, None, "Postprocess")


def call_postprocess_pipeline(postprocess_fun, *args):
    deprecated("call_postprocess_pipeline", "1.5.0", "add_stage")
    return _older_stage("postprocess", postprocess_fun, args, 0, "Postprocess")


def call_servable(*args):
    deprecated("call_servable", "1.5.0", "add_stage")
    models = _state.models + ([_state.distributed] if _state.distributed else [])
    if not models:
        raise RuntimeError("There is no model declared, you can use declare_model to declare models")
    if len(models) > 1:
        raise RuntimeError("There are more than one servable declared when the interface 'call_servable' is used, "
                           "use 'add_stage' to replace 'call_servable'")
    return _older_stage("servable", models[0], args, None, None)


# ---------------------------------------------------------------- register_method

def _method_inputs(fn, name):
    inputs = []
    for p in inspect.signature(fn).parameters.values():
        for kind in ("VAR_POSITIONAL", "VAR_KEYWORD", "KEYWORD_ONLY"):
            if p.kind == getattr(inspect.Parameter, kind):
                raise RuntimeError("'%s' input %s cannot be %s !" % (name, p.name, kind))
        inputs.append(p.name)
    return inputs


def _returns(method, result, n_outputs):
    values = list(result) if isinstance(result, (tuple, list)) else [result]
    names = [_check_placeholder(v, method, "returned") for v in values]
    if len(names) != n_outputs:
        raise RuntimeError("Method return output size %d not match registered %d" % (len(names), n_outputs))
    return names


def register_method(output_names):
    outputs = check_str_list("output_names", output_names)

    def register(fn):
        global _current
        name = fn.__name__
        servable_name()
        if name in _state.methods:
            raise RuntimeError("Method %s has been registered more than once." % name)
        method = _MethodDef(name, _method_inputs(fn, name))
        method.ast_counts = _ast_counts(fn, name)
        _current = method
        try:
            result = fn(*[_TensorDef(method, 0, i) for i in range(len(method.inputs))])
        finally:
            _current = None
        if method.ast_counts is not None:
            if "servable" not in method.calls:
                raise RuntimeError("Not find the invoke of 'call_servable'")
            if len(method.calls) != len(method.ast_counts):
                raise RuntimeError("Failed to parse method '%s', the number of stages obtained through the AST %d is "
                                   "inconsistent with the running result %d" % (name, len(method.ast_counts),
                                                                               len(method.calls)))
        _state.methods[name] = {"name": name, "inputs": method.inputs, "outputs": list(outputs),
                                "stages": method.stages, "returns": _returns(method, result, len(outputs))}
        return fn

    return register
