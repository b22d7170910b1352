"""mmp-train and mmp-eval: the training stream (shard_stream, data, tokens), the run directory and its settings, distributed set-up, stopping, validation and evaluation."""
