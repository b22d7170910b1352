"""What every stage runs on: units and their resume (stage), executors, the output lock, signals, progress, lineage and the shared command-line flags."""
