"""What one import of servable_config.py declared: the models, the methods with their stages and the
stage functions, in declaration order. export.py reads it; the stage runner finds functions here."""

models = []      # Model objects, in declaration order
methods = {}     # name -> {"inputs", "outputs", "stages", "returns"}
functions = {}   # "<servable>.<name>" -> (function, inputs count, batched)
model_io = {}    # model key -> (inputs count, outputs count), from the first add_stage
used_files = {}  # model file -> model key
distributed = None  # the Model distributed.declare_servable returned


def reset():
    global distributed
    models.clear()
    methods.clear()
    functions.clear()
    model_io.clear()
    used_files.clear()
    distributed = None
