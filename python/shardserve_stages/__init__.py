"""shardserve's Python side of composed servables: the stage runner (`python3 -m
shardserve_stages.runner`, started by `shardserve serve` for python_function stages) and the export
of a MindSpore servable_config.py into servable.json's form (`python3 -m shardserve_stages.export`)."""
