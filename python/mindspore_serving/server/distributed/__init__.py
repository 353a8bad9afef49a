"""mindspore_serving.server.distributed: declare_servable for a model split across agents. The
agents are started with `shardserve agents` (MindSpore's startup_agents) and the servable with
`shardserve serve` (start_servable); those two functions say so here."""
from ..register import _state
from ..register.model import Model
from ..register.utils import check_bool, check_int, check_int_list, servable_name


def declare_servable(rank_size, stage_size, with_batch_dim=True, without_batch_dim_inputs=None,
                     enable_pipeline_infer=False):
    check_int("rank_size", rank_size, 1)
    check_int("stage_size", stage_size, 1)
    check_bool("with_batch_dim", with_batch_dim)
    check_bool("enable_pipeline_infer", enable_pipeline_infer)
    no_batch = check_int_list("without_batch_dim_inputs", without_batch_dim_inputs, 0) if without_batch_dim_inputs \
        else ()
    name = servable_name()
    if _state.models:
        raise RuntimeError("Declare distributed model failed, servable has already been declared as local servable")
    if _state.distributed is not None:
        raise RuntimeError("Declare distributed model failed, servable is repeatedly been declared as distributed "
                           "servable")
    model = Model(name)
    model.files, model.with_batch_dim, model.without_batch_dim_inputs = (), with_batch_dim, no_batch
    model.distributed = (rank_size, stage_size, enable_pipeline_infer)
    _state.distributed = model
    return model


def _started_by_shardserve(name):
    def refuse(*args, **kwargs):
        raise RuntimeError("distributed.%s is not provided by shardserve's shim: use `shardserve %s`"
                           % (name, "agents" if name == "startup_agents" else "serve"))
    return refuse


start_servable = _started_by_shardserve("start_servable")
startup_agents = _started_by_shardserve("startup_agents")
