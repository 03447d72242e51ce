"""gali-harness: benchmark harness for training-free long-context methods on RoPE language models."""

__version__ = "0.1.0"
