"""mmp-prepare: the downstream sets' annotation files (annotations) and the stage that turns them into retrieval shards (prepare)."""
