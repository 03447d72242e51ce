"""Demos: every method on a small model, offline."""
