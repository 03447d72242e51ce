"""Dual Chunk Attention kernel: intra / successive / inter branches merged by log-sum-exp, O(n) memory.

Queries are the last s of the K keys. Rows are processed one chunk (C rows) at a time: the intra branch is a
bottom-right causal block over the row chunk's own keys, the successive and inter branches are unmasked fused
calls over the previous chunk and over everything before it. Keys use j mod C in every branch, so they are rotated
once. No score matrix is materialised.
"""

from __future__ import annotations

import logging
from typing import Literal, cast

import torch

from harness.methods.chunkllama.positions import (
    inter_query_position,
    intra_query_positions,
    key_positions,
    mscale,
    successive_query_positions,
)
from harness.methods.common.attention import attention, merge_lse
from harness.methods.common.hook import RopeTables
from harness.methods.common.key_buffer import KeyBuffers

log = logging.getLogger(__name__)
MscaleMode = Literal["per_sample", "stateful", "off"]


class DcaKernel:
    """Kernel for `install_kernel`: DCA with chunk size S, chunk length C = S − W and ChunkLlama's mscale.

    mscale modes: "per_sample" — mscale(K) on queries and all keys, K the current sequence length (stateless);
    "stateful" — the reference: the factor follows the longest length seen in the process (never shrinks), cached
    keys keep the factor of the forward that wrote them; "off" — no factor.
    """

    def __init__(self, tables: RopeTables, original_window: int, chunk_size: int, chunk_len: int,
                 mscale_mode: MscaleMode = "per_sample", max_cache_len: int | None = None, mscale_coef: float = 0.1):
        self.tables = tables
        self.original_window = original_window
        self.chunk_size = chunk_size
        self.chunk_len = chunk_len
        self.mscale_mode = mscale_mode
        self.mscale_coef = mscale_coef
        self.max_cache_len = max_cache_len
        self._max_len = original_window  # reference: tables first built for M, rebuilt when a longer length comes
        self._key_scale = torch.empty(0, dtype=torch.float64)
        self._warned = False
        self.buffers = KeyBuffers()

    def scales(self, s: int, K: int) -> tuple[float, torch.Tensor | None]:
        """(query factor, per-key factors or None) for a forward of s queries over K keys.

        A factor common to all keys is folded into the query factor (per_sample: mscale(K)²). Updates the stateful
        record.
        """
        if self.mscale_mode == "off":
            return 1.0, None
        if self.mscale_mode == "per_sample":
            return mscale(K, self.original_window, self.mscale_coef) ** 2, None
        self._max_len = max(self._max_len, K)
        m = mscale(self._max_len, self.original_window, self.mscale_coef)
        if s == K or self._key_scale.numel() < K - s:  # a new sequence (or an unknown cache): restart the record
            self._key_scale = torch.full((K,), m, dtype=torch.float64)
        elif self._key_scale.numel() < K:  # first layer of this forward: the new keys get the current factor
            self._key_scale = torch.cat([self._key_scale[: K - s], torch.full((s,), m, dtype=torch.float64)])
        return m, self._key_scale[:K]

    def __call__(self, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        bsz, heads, s, dim = q.shape
        K, S, C = k.shape[-2], self.chunk_size, self.chunk_len
        start = K - s
        if self.max_cache_len and K > self.max_cache_len and not self._warned:
            self._warned = True
            log.warning("DCA: sequence length %d exceeds max_pe = %d (the reference preallocates a KV cache of "
                        "max_pe tokens and would fail here; this implementation continues)", K, self.max_cache_len)
        scale, layer = cast(float, module.scaling), cast(int, module.layer_idx)
        q_scale, k_scale = self.scales(s, K)
        cont = self.buffers.step(layer, s, K)

        def rotate_keys(keys: torch.Tensor, first: int) -> torch.Tensor:
            pos = torch.arange(first, first + keys.shape[-2], device=keys.device)
            out = self.tables.rotate(keys, key_positions(pos, C))
            if k_scale is not None:  # stateful: each key keeps the factor of the forward that wrote it
                out = out * k_scale[first:first + keys.shape[-2]].to(device=keys.device, dtype=keys.dtype)[:, None]
            return out

        # keys keep their Hkv heads (the fused calls handle GQA); their rotations never change once written
        kr, vr = self.buffers.rotated(layer, "keys", k, cont, rotate_keys), v
        if q_scale != 1.0:
            q = q * q_scale
        pos_k = torch.arange(K, device=q.device)
        out = q.new_empty(bsz, heads, s, dim)
        pos_q = pos_k[start:]
        q_intra = self.tables.rotate(q, intra_query_positions(pos_q, C))
        q_succ = self.tables.rotate(q, successive_query_positions(pos_q, S, C)) if K > C else None
        q_inter = self.tables.rotate(q, torch.full_like(pos_q, inter_query_position(S, C))) if K > 2 * C else None
        for c in range(start // C, (K - 1) // C + 1):
            r0, r1, c0 = max(start, c * C), min(K, (c + 1) * C), c * C
            rows = slice(r0 - start, r1 - start)
            parts = [attention(q_intra[:, :, rows], kr[:, :, c0:r1], vr[:, :, c0:r1], scale, causal=True,
                               return_lse=True)]
            if c >= 1 and q_succ is not None:
                parts.append(attention(q_succ[:, :, rows], kr[:, :, c0 - C:c0], vr[:, :, c0 - C:c0], scale,
                                       return_lse=True))
            if c >= 2 and q_inter is not None:
                parts.append(attention(q_inter[:, :, rows], kr[:, :, :c0 - C], vr[:, :, :c0 - C], scale,
                                       return_lse=True))
            merged = merge_lse(parts)[0] if len(parts) > 1 else parts[0][0]
            out[:, :, r0 - start:r1 - start] = merged.to(q.dtype)
        return out
