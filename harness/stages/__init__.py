"""Stages: resolve, run, evaluate, collect, check — each reads the previous stage's files."""
