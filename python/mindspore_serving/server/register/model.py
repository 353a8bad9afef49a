"""declare_model, Model and the device contexts (MindSpore's register/model.py), with its checks and
texts. Options an ONNX CPU server cannot use (Ascend/GPU device infos, AclOptions, GpuOptions) are
validated as MindSpore does and then ignored, which is what MindSpore does off those devices."""
from . import _state
from .utils import (check_bool, check_int, check_int_list, check_str, check_str_list, deprecated,
                    servable_name)


call_hook = None  # set by shardserve's stage runner: runs instances through serve's model


class Model:
    """A declared model: add_stage runs it as a stage; Model.call runs it from inside a function
    stage at request time (one instance, or a list of instances; the first subgraph only)."""

    def __init__(self, model_key):
        self.model_key = model_key

    def call(self, *args, subgraph=0):
        prefix = "Model(%s).call() failed: " % self.model_key
        check_int("subgraph", subgraph, 0)
        if not args:
            raise RuntimeError(prefix + "no inputs provided")
        listed = len(args) == 1 and isinstance(args[0], (list, tuple))
        instances = list(args[0]) if listed else [args]
        if not instances:
            raise RuntimeError(prefix + "Input instances count is 0")
        if listed and not all(isinstance(inst, (list, tuple)) for inst in instances):
            raise RuntimeError(prefix + "inputs format invalid, a list of instances holds a list or tuple of inputs "
                                        "per instance")
        if self not in _state.models and self is not _state.distributed:
            raise RuntimeError(prefix + "the model is not declared, ensure that interface 'declare_model' can take "
                                        "effect when importing servable_config.py by the serving server")
        if call_hook is None:
            raise RuntimeError(prefix + "Model.call runs only inside a function stage, at request time")
        results = call_hook(self.model_key, [list(inst) for inst in instances], subgraph)
        if listed:
            return tuple(tuple(outs) for outs in results)
        return results[0][0] if len(results[0]) == 1 else tuple(results[0])


class _DeviceInfo:
    kind = ""
    choices = {}

    def __init__(self, **kwargs):
        self.options = {}
        for key, value in kwargs.items():
            if key not in self.choices:
                raise RuntimeError("Set %s device info failed, unsupported %s %s"
                                   % (self.kind.lower(), "parameter" if self.kind == "Ascend" else "option", key))
            allowed = self.choices[key]
            check_str(key, value)
            if allowed and value not in allowed:
                raise RuntimeError("%s device info '%s' can only be %s. given '%s'"
                                   % (self.kind.capitalize(), key, ", ".join("'%s'" % a for a in allowed), value))
            self.options[key] = value

    def _as_context_map(self):
        return dict(self.options, device_type=self.kind.lower())


class CPUDeviceInfo(_DeviceInfo):
    kind = "Cpu"
    choices = {"precision_mode": ("origin", "fp16")}


class GPUDeviceInfo(_DeviceInfo):
    kind = "Gpu"
    choices = {"precision_mode": ("origin", "fp16")}


class AscendDeviceInfo(_DeviceInfo):
    kind = "Ascend"
    choices = {"insert_op_cfg_path": None, "input_shape": None, "fusion_switch_config_path": None,
               "input_format": ("ND", "NCHW", "NHWC", "CHWN", "NC1HWC0", "NHWC1C0"),
               "output_type": ("FP32", "FP16", "UINT8"),
               "precision_mode": ("force_fp16", "allow_fp32_to_fp16", "must_keep_origin_dtype",
                                  "allow_mix_precision"),
               "op_select_impl_mode": ("high_performance", "high_precision"),
               "buffer_optimize_mode": ("l1_optimize", "l2_optimize", "off_optimize", "l1_and_l2_optimize")}


class _ModelContext:
    def __init__(self):
        self.thread_num = 0
        self.thread_affinity_core_list = []
        self.enable_parallel = 0
        self.device_list = []


class Context:
    def __init__(self, **kwargs):
        self.model_context = _ModelContext()
        self.device_types = []
        for key, value in kwargs.items():
            if key == "thread_num":
                self.model_context.thread_num = check_int(key, value, 1)
            elif key == "thread_affinity_core_list":
                self.model_context.thread_affinity_core_list = list(check_int_list(key, value, 0))
            elif key == "enable_parallel":
                self.model_context.enable_parallel = int(check_bool(key, value))
            else:
                raise RuntimeError("Set context failed, unsupported option %s" % key)

    def append_device_info(self, device_info):
        if not isinstance(device_info, (CPUDeviceInfo, GPUDeviceInfo, AscendDeviceInfo)):
            raise RuntimeError("Parameter 'device_info' should instance of CPUDeviceInfo, GPUDeviceInfo, or "
                               "AscendDeviceInfo, but actually %s" % type(device_info))
        if type(device_info) in self.device_types:
            raise RuntimeError("Device info of type %s has already been appended" % device_info.kind.lower())
        self.device_types.append(type(device_info))
        self.model_context.device_list.append({k: str(v) for k, v in device_info._as_context_map().items()})


class AclOptions:
    def __init__(self, **kwargs):
        deprecated("AclOptions", "1.6.0", "AscendDeviceInfo")
        self.context = Context()
        self.context.append_device_info(AscendDeviceInfo(**kwargs))


class GpuOptions:
    def __init__(self, **kwargs):
        deprecated("GpuOptions", "1.6.0", "GPUDeviceInfo")
        self.context = Context()
        self.context.append_device_info(GPUDeviceInfo(**kwargs))


FORMATS = {"om": "om", "mindir": "mindir", "mindir_opt": "mindir_lite", "mindir_lite": "mindir_lite"}


def declare_model(model_file, model_format, with_batch_dim=True, options=None, without_batch_dim_inputs=None,
                  context=None, config_file=None):
    files = check_str_list("model_file", model_file)
    check_str("model_format", model_format)
    fmt = FORMATS.get(model_format.lower())
    if fmt is None:
        raise RuntimeError("model format can only be OM, MindIR or MindIR_Lite, case ignored")
    check_bool("with_batch_dim", with_batch_dim)
    no_batch = check_int_list("without_batch_dim_inputs", without_batch_dim_inputs, 0) if without_batch_dim_inputs \
        else ()
    if options is not None and not isinstance(options, (AclOptions, GpuOptions)):
        raise RuntimeError("Parameter 'options' should be None, GpuOptions or AclOptions, but gotten %s" % type(options))
    if options is not None:
        deprecated("options", "1.6.0", "context")
    if context is not None and not isinstance(context, Context):
        raise RuntimeError("Parameter 'context' should be Context, but gotten %s" % type(context))
    if config_file is not None:
        check_str("config_file", config_file)
    servable_name()  # only from a servable_config.py
    if _state.distributed is not None:
        raise RuntimeError("Declare model failed, servable has already been declared as distributed servable")
    key = ";".join(files)
    for f in files:
        if f in _state.used_files:
            raise RuntimeError("Declare model %s failed, model file '%s' has already been used" % (key, f))
    for f in files:
        _state.used_files[f] = key
    model = Model(key)
    model.files, model.format, model.with_batch_dim = files, fmt, with_batch_dim
    model.without_batch_dim_inputs, model.config_file, model.distributed = no_batch, config_file, None
    _state.models.append(model)
    return model


def declare_servable(servable_file, model_format, with_batch_dim=True, options=None, without_batch_dim_inputs=None):
    deprecated("declare_servable", "1.5.0", "declare_model")
    return declare_model(servable_file, model_format, with_batch_dim, options, without_batch_dim_inputs)
