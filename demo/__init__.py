"""make demo: every stage end to end on the shipped sample (run), the sample itself (sample, sample_data/) and the local stand-in for YouTube that serves it (server)."""
