"""Long-context methods: one package per method (`<name>/__init__.py` holds its Method and Params and registers it
with `@METHODS.register`), `common/` for what several share."""

from harness.methods.base import METHODS, Method, ModelInfo, NoParams

__all__ = ["METHODS", "Method", "ModelInfo", "NoParams"]
