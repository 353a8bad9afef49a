"""mindspore_serving.server.register: declare models, methods and their stages in
servable_config.py (shardserve's shim of MindSpore's package of the same name)."""
from . import method, model
from .method import (add_stage, call_postprocess, call_postprocess_pipeline, call_preprocess,
                     call_preprocess_pipeline, call_servable, register_method)
from .model import (AclOptions, AscendDeviceInfo, Context, CPUDeviceInfo, GPUDeviceInfo, GpuOptions, Model,
                    declare_model, declare_servable)

# MindSpore's __all__, then what it exports besides (deprecated forms, option classes, submodules)
__all__ = ["declare_model", "Model", "Context", "AscendDeviceInfo", "CPUDeviceInfo", "GPUDeviceInfo",
           "register_method", "add_stage",
           "AclOptions", "GpuOptions", "declare_servable", "call_preprocess", "call_servable", "call_postprocess",
           "call_preprocess_pipeline", "call_postprocess_pipeline", "method", "model"]
