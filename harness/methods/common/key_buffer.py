"""Rotated-key buffers for decode steps (shared by the SelfExtend and DCA kernels).

The KV cache holds un-rotated keys, but in SelfExtend and DCA a key's rotation never changes once written (key j
sits at j, floor(j/G) or j mod C). During decoding, each layer therefore keeps its rotated keys from the previous
step and rotates only the new key: O(d) rotation work per step instead of O(K·d). Results are identical to rotating
every key (the same elementwise operations on the same rows).

Buffers exist only while decoding: any multi-token forward drops them (prefill computes temporaries), so they cost
one rotated copy of the keys per layer during generation and nothing during prefill. One sequence at a time: a
forward that does not continue the layer's previous forward by exactly one token rebuilds from scratch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: rotate(keys [b, Hkv, n, d], first absolute index) -> rotated keys
Rotate = Callable[[torch.Tensor, int], torch.Tensor]


class KeyBuffers:
    """Per-layer buffers of rotated keys, keyed by (layer, name)."""

    def __init__(self) -> None:
        self._last_len: dict[int, int] = {}
        self._bufs: dict[tuple[int, str], tuple[int, torch.Tensor]] = {}

    def reset(self) -> None:
        """Forget everything (a new sequence)."""
        self._last_len.clear()
        self._bufs.clear()

    def step(self, layer: int, s: int, K: int) -> bool:
        """Record a forward of s queries over K keys; True when it is a one-token continuation of the last one."""
        cont = s == 1 and self._last_len.get(layer) == K - 1
        self._last_len[layer] = K
        if not cont:
            for key in [key for key in self._bufs if key[0] == layer]:
                del self._bufs[key]
        return cont

    def rotated(self, layer: int, name: str, keys: torch.Tensor, cont: bool, rotate: Rotate) -> torch.Tensor:
        """Rotated `keys` (all n of them, absolute indices 0..n−1); reuses the buffer on a continuation step."""
        n = keys.shape[-2]
        if not cont:
            return rotate(keys, 0)
        entry = self._bufs.get((layer, name))
        if entry is not None and entry[0] == n - 1 and entry[1].dtype == keys.dtype:
            buf = entry[1]
            if buf.shape[-2] < n:
                grown = buf.new_empty(*buf.shape[:2], 2 * n, buf.shape[-1])
                grown[:, :, : n - 1] = buf[:, :, : n - 1]
                buf = grown
            buf[:, :, n - 1:n] = rotate(keys[:, :, n - 1:], n - 1)
        else:
            buf = keys.new_empty(*keys.shape[:2], n + n // 4 + 64, keys.shape[-1])
            buf[:, :, :n] = rotate(keys, 0)
        self._bufs[(layer, name)] = (n, buf)
        return buf[:, :, :n]
