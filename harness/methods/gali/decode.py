"""GALI decode steps beyond the window in two rotation frames, so a step rotates O(1) keys instead of the whole tail.

Beyond the window the keys split into the interpolated region (rows [0, n_interp), positions u + j/g that do not
move while the group size g is unchanged) and the unit-spaced tail (rows [n_interp, K), integer positions
k … M−1 that all shift by one at every step). Inside the tail, query–key distances are token distances, and RoPE
logits depend only on the distance, so the tail is attended to in its own frame: each key rotated once at its token
index j, the query at its token index K − 1. The interpolated region uses the plan's tables (query at ceil(p), keys
interpolated). Both frames' logits of the single query ([b, H, 1, K], O(K) memory) share one softmax.

Per layer two buffers grow by appending: the interpolated keys (valid while g is unchanged) and the token-frame keys
of the rows that were in the tail since the buffers were built. A step rotates the keys that entered the interpolated
region (usually one) and the new key. Equal to the one-frame path up to float rounding (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.methods.gali.kernel import grouped_scores, grouped_values, rope_rotate


def token_tables(start: int, end: int, inv_freq: torch.Tensor, scaling: float,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 half tables (cos, sin) of the integer positions start..end−1, angles computed in float64 (exact enough
    at any index, unlike fp32 angles at tens of thousands of tokens)."""
    ang = torch.arange(start, end, device=device, dtype=torch.float64)[:, None] * inv_freq.to(device, torch.float64)
    return (ang.cos() * scaling).float(), (ang.sin() * scaling).float()


def _new_buffer(like: torch.Tensor, rows: int) -> torch.Tensor:
    """An empty [b, Hkv, rows + slack, d] buffer for `like`'s keys (slack for later decode steps)."""
    b, h, _, d = like.shape
    return like.new_empty(b, h, rows + max(64, rows // 8), d)


def _grow(buf: torch.Tensor, rows: int) -> torch.Tensor:
    """`buf` with room for at least `rows` rows along dim −2, contents kept."""
    if buf.shape[-2] >= rows:
        return buf
    new = _new_buffer(buf, rows)
    new[..., : buf.shape[-2], :] = buf
    return new


@dataclass
class _LayerState:
    group: int
    n_keys: int  # keys seen by the latest step
    n_interp: int  # rows of `interp` that are valid
    interp: torch.Tensor  # [b, Hkv, cap, d]: keys rotated with the interpolated tables
    first: int  # token index of row 0 of `tokens`
    tokens: torch.Tensor  # [b, Hkv, cap, d]: keys first..n_keys−1 rotated at their token index


class TwoFrameDecoder:
    """Per-layer buffers and the two-frame attention of one decode step (one query, K > M)."""

    def __init__(self) -> None:
        self._state: dict[int, _LayerState] = {}
        self._token_memo: tuple[tuple, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _token_tables(self, start: int, end: int, inv_freq: torch.Tensor, scaling: float,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """`token_tables`, computed once per step for all layers (they ask for the same rows)."""
        key = (start, end, str(device), scaling)
        if self._token_memo is None or self._token_memo[0] != key:
            self._token_memo = (key, token_tables(start, end, inv_freq, scaling, device))
        return self._token_memo[1]

    def reset(self, layer: int | None = None) -> None:
        """Forget one layer's buffers (or all)."""
        if layer is None:
            self._state.clear()
        else:
            self._state.pop(layer, None)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, *,
               group: int, n_interp: int, interp_tables: tuple[torch.Tensor, torch.Tensor],
               q_tables: tuple[torch.Tensor, torch.Tensor], inv_freq: torch.Tensor, scaling: float,
               perturb: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Attention of the newest query q [b, H, 1, d] over un-rotated k/v [b, Hkv, K, d] -> [b, H, 1, d].

        `interp_tables`: tables of the interpolated rows (at least `n_interp` rows); `q_tables`: the query's tables in
        the interpolated frame (at ceil of its position). `perturb`: adds GALI's noise to the fp32 logits
        [b, H, 1, K] (columns in token order) before the softmax.
        """
        n_keys = k.shape[-2]
        st = self._state.get(layer)
        fresh = (st is None or st.group != group or st.n_keys != n_keys - 1 or st.n_interp > n_interp
                 or st.interp.shape[:2] != k.shape[:2] or st.interp.dtype != k.dtype
                 or st.interp.device != k.device or st.interp.is_inference() != torch.is_inference_mode_enabled())
        if fresh or st is None:
            st = _LayerState(group, 0, 0, _new_buffer(k, n_interp), n_interp, _new_buffer(k, n_keys - n_interp))
        cos, sin = interp_tables
        if st.n_interp < n_interp:  # keys that entered the interpolated region
            st.interp = _grow(st.interp, n_interp)
            a, b = st.n_interp, n_interp
            rope_rotate(k[..., a:b, :], cos[a:b], sin[a:b], out=st.interp[..., a:b, :])
        lo = max(st.n_keys, st.first)  # first key not yet in the token frame: the new key (fresh: the whole tail)
        st.tokens = _grow(st.tokens, n_keys - st.first)
        t_cos, t_sin = self._token_tables(lo, n_keys, inv_freq, scaling, k.device)
        rope_rotate(k[..., lo:n_keys, :], t_cos, t_sin, out=st.tokens[..., lo - st.first:n_keys - st.first, :])
        st.n_interp, st.n_keys = n_interp, n_keys
        self._state[layer] = st

        q_interp = rope_rotate(q, *q_tables)
        q_token = rope_rotate(q, t_cos[-1:], t_sin[-1:])  # the query is the newest token: the last row
        tail = slice(n_interp - st.first, n_keys - st.first)
        # one query: explicit scores are [b, H, 1, K] (O(K) memory), one softmax over both frames' logits
        scores = torch.cat([grouped_scores(q_interp, st.interp[..., :n_interp, :]),
                            grouped_scores(q_token, st.tokens[..., tail, :])], dim=-1).float() * scale
        if perturb is not None:
            scores = perturb(scores)
        probs = torch.softmax(scores, dim=-1).to(v.dtype)
        out = grouped_values(probs[..., :n_interp], v[..., :n_interp, :])
        return out.add_(grouped_values(probs[..., n_interp:], v[..., n_interp:, :])).to(q.dtype)
