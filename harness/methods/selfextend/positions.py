"""SelfExtend position arithmetic (docs/reference/methods.md §3): pure functions, no model glue.

Query i, key j (absolute indices). Neighbour region `0 ≤ i − j < W`: standard distance i − j. Group region
`i − j ≥ W`: the key sits at floor(j/G) and the query at floor(i/G) + shift, with shift = W − floor(W/G)
("floor", the reference's decode and eager paths) or W − W/G ("true_div", the reference's flash prefill), and
0 when the largest query position is below W (then no key is in the group region anyway).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from harness.core.errors import ConfigError

ShiftMode = Literal["floor", "true_div"]

#: the GALI paper's Table 10 (docs/methods/selfextend_dca.md): (M, target) -> (window_size W, group_size G)
TABLE10: dict[tuple[int, int], tuple[int, int]] = {
    (2048, 8192): (512, 5),
    (4096, 8192): (2048, 3),
    (4096, 16384): (1024, 5),
    (4096, 32768): (2048, 15),
    (8192, 16384): (4096, 3),
    (8192, 32768): (2048, 5),
}


def group_shift(window: int, group: int, mode: ShiftMode = "floor", max_position: int | None = None) -> float:
    """The constant added to the grouped query position: W − floor(W/G) or W − W/G; 0 if max_position < W."""
    if max_position is not None and max_position < window:
        return 0
    if mode == "floor":
        return window - window // group
    if mode == "true_div":
        return window - window / group
    raise ValueError(f"unknown shift mode {mode!r}")


def group_query_positions(positions: torch.Tensor, group: int, shift: float) -> torch.Tensor:
    """floor(i/G) + shift, as float64 (the shift may be fractional)."""
    return torch.div(positions, group, rounding_mode="floor").double() + shift


def group_key_positions(positions: torch.Tensor, group: int) -> torch.Tensor:
    """floor(j/G)."""
    return torch.div(positions, group, rounding_mode="floor")


def log_scale(q_pos: torch.Tensor, scale_base: float) -> torch.Tensor | None:
    """SelfExtend's optional query scaling max(1, log(i+1)/log(scale_base)); None when off (scale_base ≤ 0)."""
    if scale_base <= 0:
        return None
    return (torch.log(q_pos.double() + 1) / math.log(scale_base)).clamp(min=1.0)


def max_supported_length(original_window: int, window: int, group: int) -> int:
    """(M − W)·G + W: the longest input whose group positions stay within the pre-trained window."""
    return (original_window - window) * group + window


def min_group(original_window: int, window: int, target: int) -> int | None:
    """The smallest G with (M − W)·G + W ≥ target (None if W ≥ M and target > M)."""
    if window >= original_window:
        return 1 if target <= original_window else None
    return max(1, math.ceil((target - window) / (original_window - window)))


def max_window(original_window: int, group: int, target: int) -> int | None:
    """The largest W with (M − W)·G + W ≥ target (None if even W = 1 fails)."""
    if group <= 1:
        return original_window if target <= original_window else None
    w = (original_window * group - target) // (group - 1)
    w = min(w, original_window)
    return w if w >= 1 else None


def suggested_pair(original_window: int, target: int) -> tuple[int, int]:
    """(W, G): the paper's Table 10 setting for (M, target) if listed, else W = M/4 (≥ 1) and the smallest valid G.

    The Table 10 rows are also used for shorter targets of a listed M when they remain valid.
    """
    target = max(target, 1)
    if (original_window, target) in TABLE10:
        return TABLE10[(original_window, target)]
    for (m, t), pair in sorted(TABLE10.items(), key=lambda kv: kv[0][1]):
        if m == original_window and t >= target:
            return pair
    w = max(1, original_window // 4)
    g = min_group(original_window, w, target)
    return w, g if g is not None else 1


def valid_pairs(original_window: int, target: int, prefer_window: int | None = None,
                prefer_group: int | None = None) -> list[tuple[int, int]]:
    """A few valid (W, G) pairs for the error message: around the user's choice first, then W = M/2, M/4, M/8."""
    pairs: list[tuple[int, int]] = []
    if prefer_window is not None:
        g = min_group(original_window, prefer_window, target)
        if g is not None:
            pairs.append((prefer_window, g))
    if prefer_group is not None:
        w = max_window(original_window, prefer_group, target)
        if w is not None:
            pairs.append((w, prefer_group))
    pairs.append(suggested_pair(original_window, target))
    for div in (2, 4, 8):
        w = max(1, original_window // div)
        g = min_group(original_window, w, target)
        if g is not None:
            pairs.append((w, g))
    return list(dict.fromkeys(pairs))[:4]


def _pairs_text(pairs: list[tuple[int, int]]) -> str:
    return "; ".join(f"window_size = {w}, group_size = {g}" for w, g in pairs)


def check_pair(window: int, group: int, original_window: int, target: int | None) -> None:
    """Raise ConfigError unless W ≤ M and (M − W)·G + W ≥ target (target = max_pe; None skips that check)."""
    M = original_window
    if window > M:
        raise ConfigError("params.window_size", f"window_size W = {window} exceeds the model's pre-trained window "
                          f"M = {M}: neighbour distances up to W − 1 would be unseen",
                          f"use W < M, e.g. {_pairs_text(valid_pairs(M, target or M, prefer_group=group))}")
    if target is None:
        return
    reach = max_supported_length(M, window, group)
    if reach < target:
        raise ConfigError(
            "params.group_size",
            f"SelfExtend with window_size W = {window}, group_size G = {group} on a model with window M = {M} "
            f"covers (M − W)·G + W = ({M} − {window})·{group} + {window} = {reach} tokens, below the target "
            f"length max_pe = {target}: group positions would exceed the pre-trained window",
            f"valid pairs for max_pe = {target}: {_pairs_text(valid_pairs(M, target, window, group))}")
