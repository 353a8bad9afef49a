"""shardserve's `mindspore_serving` shim: enough of MindSpore Serving's Python package for an
unchanged servable_config.py to declare its models, methods and stages. `shardserve serve` imports
the config once (shardserve_stages.export) to turn the declarations into servable.json's form, and
the Python stage runners import it again to call its functions. Only the declaration API is here;
start_servables & co. are replaced by `shardserve serve` and `shardserve agents`."""
