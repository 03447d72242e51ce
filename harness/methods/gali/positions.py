"""GALI position construction (docs/reference/methods.md §2.3–2.4): the prefill chunk schedule and the greedy
interpolated positions.

Pure functions, no model glue. Positions are returned in an exact split form (integer floor + numerator/`group`)
so that interpolation weights can be computed without rounding; `positions()` gives the float view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def chunk_sizes(n_tokens: int, window: int, chunk_coe: int | float) -> list[int]:
    """Forward sizes for a prompt of `n_tokens`: `[window, c1, c2, ...]` (sum == n_tokens); `[n]` when n <= window.

    An `int` chunk_coe is a fixed chunk size; a `float` (including an integral one such as 3000.0, as in the
    reference) is a ratio: each chunk is `floor(total_so_far * chunk_coe)` tokens. The last chunk is trimmed.
    A schedule that would produce an empty chunk raises ValueError instead of looping forever.
    """
    if n_tokens <= window:
        return [n_tokens]
    is_ratio = isinstance(chunk_coe, float)
    if not is_ratio and int(chunk_coe) < 1:
        raise ValueError(f"chunk_coe must be >= 1 as a chunk size, got {chunk_coe}")
    sizes = [window]
    total = window
    while total < n_tokens:
        size = math.floor(total * chunk_coe) if is_ratio else int(chunk_coe)
        if size < 1:
            raise ValueError(f"chunk_coe={chunk_coe} gives an empty chunk after {total} tokens")
        size = min(size, n_tokens - total)
        sizes.append(size)
        total += size
    return sizes


@dataclass(frozen=True)
class Layout:
    """Shape of the greedy construction for T tokens in a window of M with minimum unit-spaced tail w."""

    total: int  # T
    window: int  # M
    group: int  # g: tokens per interpolated unit slot (1 when T <= M)
    slots: int  # k: number of interpolated unit slots [0, k)
    n_interp: int  # tokens in the interpolated region (the oldest ones)

    @property
    def tail(self) -> int:
        """Number of newest tokens at unit-spaced integer positions k .. M-1 (all T tokens when T <= M)."""
        return self.total - self.n_interp


def layout(total: int, window: int, local_window: int) -> Layout:
    """Closed form of `construct_new_pi`: g = ceil((T-w)/(M-w)), k = ceil((T-M)/(g-1)), n_interp = T-(M-k)."""
    if not 0 <= local_window < window:
        raise ValueError(f"local_window must satisfy 0 <= w < M, got w={local_window}, M={window}")
    if total <= window:
        return Layout(total, window, 1, 0, 0)
    group = -(-(total - local_window) // (window - local_window))
    slots = -(-(total - window) // (group - 1))
    return Layout(total, window, group, slots, total - (window - slots))


def position_parts(total: int, window: int, local_window: int,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Exact positions of all T tokens as (floor int64 [T], numerator int64 [T], group g): p = floor + num/g.

    The oldest `n_interp` tokens fill unit slots u = 0..k-1 with g equally spaced positions u + j/g (the last slot
    may be only partly filled); the newest M-k tokens sit at the integers k..M-1. For T <= M: 0..T-1.
    """
    lay = layout(total, window, local_window)
    if lay.n_interp == 0:
        return torch.arange(total, device=device), torch.zeros(total, dtype=torch.long, device=device), 1
    idx = torch.arange(lay.n_interp, device=device)
    floor = torch.cat([idx // lay.group, torch.arange(lay.slots, window, device=device)])
    num = torch.cat([idx % lay.group, torch.zeros(window - lay.slots, dtype=torch.long, device=device)])
    return floor, num, lay.group


def positions_at(idx: torch.Tensor, total: int, window: int, local_window: int) -> torch.Tensor:
    """GALI positions (float64) of the tokens with indices `idx` among T = total, without building all T."""
    lay = layout(total, window, local_window)
    if lay.n_interp == 0:
        return idx.to(torch.float64)
    interp = (idx // lay.group).to(torch.float64) + (idx % lay.group).to(torch.float64) / lay.group
    tail = (idx - lay.n_interp + lay.slots).to(torch.float64)
    return torch.where(idx < lay.n_interp, interp, tail)


def positions(total: int, window: int, local_window: int, dtype: torch.dtype = torch.float64,
              device: torch.device | str | None = None) -> torch.Tensor:
    """GALI positions of all T tokens as floats (non-decreasing, first 0, last M-1 when T > M)."""
    floor, num, group = position_parts(total, window, local_window, device)
    return (floor.to(torch.float64) + num.to(torch.float64) / group).to(dtype)


def split_positions(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Arbitrary float positions -> (floor int64, fractional part in [0, 1) as float64)."""
    pos = pos.to(torch.float64)
    floor = torch.floor(pos)
    return floor.to(torch.long), pos - floor


def key_weights(pos: torch.Tensor) -> torch.Tensor:
    """Interpolation weight r_j = frac(ceil(p_i) - p_j) for any integer query position (float64 [K]).

    Queries sit at integer positions, so r depends on the key only: r = 1 - frac(p_j) if p_j is fractional, else 0.
    The logit is (1 - r)·ℓ(ceil p_i, ceil p_j) + r·ℓ(ceil p_i, floor p_j).
    """
    _, frac = split_positions(pos)
    return torch.where(frac > 0, 1.0 - frac, torch.zeros_like(frac))


def bf16_reference_weights(q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """r [s, K] as the released code computes it: ceil(p_i) and p_j cast to bf16, subtracted in bf16, mod 1.

    For ceil(p_i) >= 256 every entry is exactly 0 (bf16 keeps no fractional bits there), so the logit equals
    ℓ(ceil p_i, ceil p_j): no interpolation, and noise masked by r != 0 vanishes (docs/reference/methods.md §2.7).
    """
    q_ceil = torch.ceil(q_pos.to(torch.float32)).to(torch.bfloat16)
    k = k_pos.to(torch.float32).to(torch.bfloat16)
    return torch.remainder(q_ceil[:, None] - k[None, :], 1)
