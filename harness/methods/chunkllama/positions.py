"""Dual Chunk Attention (ChunkLlama) position arithmetic (docs/reference/methods.md §4): pure functions, no model glue.

Chunk size S (default floor(3M/4)), local window W (default floor(M/16)), chunk length C = S − W. Query at absolute
index i, key at j, a = i mod C, b = j mod C, chunk index = index // C:
  * same chunk (intra):            query a,                 key b   -> a − b (= i − j)
  * previous chunk (successive):   query min(C + a, S),     key b
  * two or more back (inter):      query min(2C − 1, S),    key b   (the successive table at index C − 1)
"""

from __future__ import annotations

import math

import torch

from harness.core.errors import ConfigError


def dca_sizes(original_window: int, chunk_size: int | None = None,
              local_window: int | None = None) -> tuple[int, int, int]:
    """(S, W, C): chunk size, local window, chunk length; defaults floor(3M/4) and floor(M/16)."""
    S = chunk_size if chunk_size is not None else original_window * 3 // 4
    W = local_window if local_window is not None else original_window // 16
    return S, W, S - W


def check_sizes(chunk_size: int, local_window: int, original_window: int | None) -> None:
    """Raise ConfigError for W ≥ S or S ≥ M (S ≥ 1 and W ≥ 0 are the fields' domains)."""
    if local_window >= chunk_size:
        raise ConfigError("params.local_window", f"local_window ({local_window}) must be below chunk_size "
                          f"({chunk_size}): the chunk length C = chunk_size − local_window must be ≥ 1",
                          "use local_window ≈ chunk_size / 12 (the defaults are 3M/4 and M/16)")
    if original_window is not None and chunk_size >= original_window:
        raise ConfigError("params.chunk_size", f"chunk_size S = {chunk_size} must be below the pre-trained window "
                          f"M = {original_window} (distances reach S)",
                          f"use S ≤ {original_window - 1}, e.g. {original_window * 3 // 4} (3M/4)")


def key_positions(positions: torch.Tensor, chunk_len: int) -> torch.Tensor:
    """j mod C."""
    return torch.remainder(positions, chunk_len)


def intra_query_positions(positions: torch.Tensor, chunk_len: int) -> torch.Tensor:
    """a = i mod C."""
    return torch.remainder(positions, chunk_len)


def successive_query_positions(positions: torch.Tensor, chunk_size: int, chunk_len: int) -> torch.Tensor:
    """min(C + a, S)."""
    return (torch.remainder(positions, chunk_len) + chunk_len).clamp(max=chunk_size)


def inter_query_position(chunk_size: int, chunk_len: int) -> int:
    """min(2C − 1, S): every query of a chunk sits here when it looks two or more chunks back."""
    return min(2 * chunk_len - 1, chunk_size)


def mscale(seq_len: int, original_window: int, coef: float = 0.1) -> float:
    """ChunkLlama's YaRN-style factor on q and k (logits × mscale²): 1 if seq_len ≤ M, else coef·ln(seq_len/M) + 1
    (coef 0.1 in ChunkLlama's flash_decoding_chunkllama.py, 0.05 in its chunkllama_attn_replace.py)."""
    ratio = seq_len / original_window
    return 1.0 if ratio <= 1 else coef * math.log(ratio) + 1.0
