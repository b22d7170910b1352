"""Shard layout, writers, readers and verification shared by every stage."""
