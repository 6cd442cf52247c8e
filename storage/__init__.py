"""Persistence: one sqlite database per node (single writer thread) and a content-addressed blob store."""
