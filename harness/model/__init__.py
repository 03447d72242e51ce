"""Model layer: loading (families, GGUF), the facts methods need (`ModelInfo`), the inference engine."""
