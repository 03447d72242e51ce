"""`ModelInfo`: the facts about a loaded model that methods need (filled by harness.model.loading.model_info)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelInfo:
    """Facts about the loaded model that methods need (filled by harness.model.loading)."""

    model_type: str
    original_window: int  # M: the pre-trained window (after `ori_max_position_embeddings`)
    head_dim: int
    rope_theta: float
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rope_type: str = "default"
