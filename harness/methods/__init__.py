"""Long-context methods. Each module registers one method with `@METHODS.register`."""

from harness.methods.base import METHODS, Method, ModelInfo, NoParams

__all__ = ["METHODS", "Method", "ModelInfo", "NoParams"]
