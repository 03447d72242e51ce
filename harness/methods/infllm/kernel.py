"""InfLLM's block memory as an attention kernel (docs/methods/streaming.md).

Query i, key j, d = i − j (positions as InfLLM assigns them):
* d < n_local: **local**, ordinary RoPE at the true distance d;
* d >= n_local: **global**, the query rotated to n_local and the key not rotated (every memory token at distance
  n_local). A global key is attended if it is an **initial** token (j < n_init), a **remainder** token (not yet part
  of a memory block), or in a memory block that query i **retrieved**.
Memory blocks: tokens after the n_init initial ones, in blocks of B. Block β = [n_init + βB, n_init + (β+1)B) is in
memory for query i once its last token is at distance >= n_local + 1 (InfLLM forms it after the step that pushed it
out of the local window), so query i sees nb(i) = max(0, ⌊(i − n_local − n_init) / B⌋) blocks. A block's
representative key (per head) is the mean of its `repr_topk` keys with the largest **local score**: the attention
probability (of the merged local + global softmax) the key received from the queries that saw it locally, summed.
Query i retrieves the top-k blocks by Σ_heads ⟨R(n_local) q_i, repr⟩ (all blocks while nb(i) <= topk).

Retrieval is per query (InfLLM's decode rule), so chunked prefill, one-shot prefill and decode give the same result.
Queries are processed in blocks that never straddle a block-formation boundary; the local scores and the block
representatives are state kept per layer between forwards (reset when a forward starts a new sequence).

With `chunk_retrieval` (InfLLM's prefill rule) queries are processed in chunks aligned to multiples of
exc_block_size: every query of a chunk sees the blocks formed before the chunk (the later tokens stay remainder) and
the chunk retrieves once, by the mean of its queries rotated to n_local. A one-token forward (decode) is a chunk of
its own, as in InfLLM; a prefill then differs from decoding the same tokens once retrieval is active.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch

from harness.methods.common.attention import attention
from harness.methods.common.banded import PositionTable
from harness.methods.common.rope import repeat_kv

NEG_INF = float("-inf")


@dataclass(frozen=True)
class InfLLMSizes:
    """Resolved sizes (tokens): n_init, n_local, block B, topk, repr_topk, exc_block_size; `chunk_retrieval`:
    the official prefill rule (one retrieval per exc_block_size chunk) instead of one per query."""

    n_init: int
    n_local: int
    block_size: int
    topk: int
    repr_topk: int
    exc_block_size: int
    chunk_retrieval: bool = False

    def blocks_seen(self, i: int) -> int:
        """nb(i): memory blocks formed before query i."""
        return max(0, (i - self.n_local - self.n_init) // self.block_size)

    def max_keys_per_query(self) -> int:
        """Most keys one query attends: local + initial + retrieved blocks + remainder (<= B, or B + chunk − 1
        with chunk retrieval, where a chunk's queries share the blocks formed before it)."""
        rest = self.block_size + (self.exc_block_size - 1 if self.chunk_retrieval else 0)
        return self.n_local + self.n_init + self.topk * self.block_size + rest


@dataclass
class _LayerState:
    """Per-layer memory: local scores of keys not yet in a block, and the blocks' representative keys."""

    length: int = 0
    score_start: int = 0
    scores: torch.Tensor | None = None  # [H, length − score_start] fp32
    reprs: torch.Tensor | None = None  # [blocks, H, d] fp32

    @property
    def blocks(self) -> int:
        return 0 if self.reprs is None else self.reprs.shape[0]


@dataclass
class _Rotated:
    """One forward's rotations: queries at their positions (from q0), keys from k_lo on, queries at n_local."""

    q0: int
    k_lo: int
    qn: torch.Tensor
    kn: torch.Tensor
    qg: torch.Tensor


class InfLLMKernel:
    """Local window + initial tokens + per-query top-k retrieved blocks (see the module docstring)."""

    def __init__(self, tables: Any, sizes: InfLLMSizes):
        self.tables, self.sizes = tables, sizes
        self.att = float(getattr(tables, "attention_scaling", 1.0))
        self.table = PositionTable(tables.inv_freq, self.att)
        self._states: dict[int, _LayerState] = {}  # by layer index (one kernel serves one model)
        self.max_keys_seen = 0  # most keys one query attended so far (local + global; for gali-check)

    # ---- state ----------------------------------------------------------------------------------------------
    def _state(self, module: torch.nn.Module, past: int) -> _LayerState:
        layer = int(getattr(module, "layer_idx", 0))
        st = self._states.get(layer)
        if past == 0 or st is None:
            if past != 0:
                raise RuntimeError("InfLLM kernel: a forward continues a sequence this layer has not seen "
                                   "(start every sequence with an empty KV cache)")
            st = _LayerState()
            self._states[layer] = st
        elif st.length != past:
            raise RuntimeError(f"InfLLM kernel: the KV cache holds {past} tokens but the block memory covers "
                               f"{st.length} (a cache was reused or edited); start the sequence again")
        return st

    def _grow_scores(self, st: _LayerState, heads: int, K: int, device: torch.device) -> None:
        have = 0 if st.scores is None else st.scores.shape[-1]
        need = K - st.score_start
        extra = torch.zeros(heads, need - have, device=device, dtype=torch.float32)
        st.scores = extra if st.scores is None else torch.cat([st.scores, extra], dim=-1)

    def _form_blocks(self, st: _LayerState, k: torch.Tensor, upto: int) -> None:
        """Form memory blocks 0..upto−1 that do not exist yet (their local scores are complete)."""
        z = self.sizes
        if st.blocks >= upto:
            return
        assert st.scores is not None  # `_grow_scores` ran for this forward
        n_rep = st.scores.shape[0] // k.shape[1]
        while st.blocks < upto:
            lo = z.n_init + st.blocks * z.block_size
            sc = st.scores[:, lo - st.score_start: lo - st.score_start + z.block_size]  # [H, B]
            top = sc.topk(min(z.repr_topk, z.block_size), dim=-1).indices  # [H, r]
            keys = repeat_kv(k[:, :, lo:lo + z.block_size], n_rep)[0].float()  # [H, B, d]
            rep = torch.gather(keys, 1, top[..., None].expand(-1, -1, keys.shape[-1])).mean(dim=1)
            st.reprs = rep[None] if st.reprs is None else torch.cat([st.reprs, rep[None]])
            cut = lo + z.block_size - st.score_start
            st.scores, st.score_start = st.scores[:, cut:], lo + z.block_size

    # ---- attention --------------------------------------------------------------------------------------------
    def _global(self, qg: torch.Tensor, k: torch.Tensor, v: torch.Tensor, st: _LayerState, a: int, b: int,
                scale: float) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Global part of query rows a..b−1 (qg already rotated to n_local): (out, lse) or None if no key is far."""
        z = self.sizes
        far_hi = b - z.n_local  # keys j < far_hi are far for the last row
        if far_hi <= 0:
            return None
        dev = qg.device
        nb = z.blocks_seen(a)
        rows = torch.arange(a, b, device=dev)
        rest_lo = z.n_init + nb * z.block_size
        region = torch.cat([torch.arange(min(z.n_init, far_hi), device=dev),
                            torch.arange(min(rest_lo, far_hi), far_hi, device=dev)])
        idx, mask = region, region[None, :] <= (rows[:, None] - z.n_local)
        if nb:
            if nb <= z.topk or st.reprs is None:
                sel = torch.ones(b - a, nb, dtype=torch.bool, device=dev)
            else:
                qs = qg[0].float().mean(dim=1, keepdim=True) if z.chunk_retrieval else qg[0].float()
                score = torch.einsum("hqd,nhd->qn", qs, st.reprs[:nb])  # [rows or 1, nb]
                sel = torch.zeros(score.shape[0], nb, dtype=torch.bool, device=dev)
                sel.scatter_(1, score.topk(z.topk, dim=-1).indices, True)
                sel = sel.expand(b - a, nb)
            used = sel.any(dim=0).nonzero().flatten()
            tok = (z.n_init + used[:, None] * z.block_size + torch.arange(z.block_size, device=dev)).flatten()
            idx = torch.cat([idx, tok])
            mask = torch.cat([mask, sel[:, used].repeat_interleave(z.block_size, dim=1)], dim=1)
        kg = k[:, :, idx]
        kg = kg if self.att == 1.0 else kg * self.att  # rotation by 0 (times the rope type's scaling, if any)
        local = torch.clamp(rows + 1, max=z.n_local)
        self.max_keys_seen = max(self.max_keys_seen, int((mask.sum(dim=1) + local).max()))
        return attention(qg, kg, v[:, :, idx], scale, mask=mask, return_lse=True)

    def _rows(self, r: _Rotated, k: torch.Tensor, v: torch.Tensor, st: _LayerState, a: int, b: int,
              scale: float) -> torch.Tensor:
        """Output of query rows a..b−1 (absolute); adds the local probabilities to the local scores."""
        z = self.sizes
        lo = max(0, a - z.n_local + 1)
        n_rep = r.qn.shape[1] // k.shape[1]
        qn = r.qn[:, :, a - r.q0:b - r.q0].float()
        kn = repeat_kv(r.kn[:, :, lo - r.k_lo:b - r.k_lo], n_rep).float()
        vl = repeat_kv(v[:, :, lo:b], n_rep).float()
        logits = torch.matmul(qn, kn.transpose(-1, -2)) * scale  # [1, H, rows, b − lo]
        d = torch.arange(a, b, device=k.device)[:, None] - torch.arange(lo, b, device=k.device)[None, :]
        logits = logits.masked_fill(~((d >= 0) & (d < z.n_local)), NEG_INF)
        lse = torch.logsumexp(logits, dim=-1)
        glob = self._global(r.qg[:, :, a - r.q0:b - r.q0], k, v, st, a, b, scale)
        if glob is not None:
            lse = torch.logaddexp(lse, glob[1])
        probs = torch.exp(logits - lse[..., None])
        out = torch.matmul(probs, vl)
        if glob is not None:
            out = out + torch.exp(glob[1] - lse)[..., None] * glob[0]
        assert st.scores is not None
        st.scores[:, lo - st.score_start:b - st.score_start] += probs[0].sum(dim=1)
        self.max_keys_seen = max(self.max_keys_seen, min(z.n_local, b))  # local keys of the last row
        return out

    def __call__(self, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s, K = q.shape[-2], k.shape[-2]
        q0 = K - s
        z = self.sizes
        st = self._state(module, q0)
        self._grow_scores(st, q.shape[1], K, q.device)
        k_lo = max(0, q0 - z.n_local + 1)  # rotate once per forward what the query blocks slice
        r = _Rotated(q0, k_lo, self.table.rotate(q, q0), self.table.rotate(k[:, :, k_lo:], k_lo),
                     self.tables.rotate(q, torch.full((s,), z.n_local, device=q.device)))
        outs, a = [], q0
        while a < K:
            if z.chunk_retrieval:  # chunks aligned to multiples of exc_block_size, sharing blocks and retrieval
                b = min(K, (a // z.exc_block_size + 1) * z.exc_block_size)
            else:  # never straddle a block-formation boundary (query i sees blocks_seen(i) blocks)
                nxt = z.n_local + z.n_init + (z.blocks_seen(a) + 1) * z.block_size
                b = min(K, a + z.exc_block_size, nxt)
            nb = z.blocks_seen(a)
            self._form_blocks(st, k, nb)
            outs.append(self._rows(r, k, v, st, a, b, cast(float, module.scaling)))
            a = b
        st.length = K
        if K <= z.n_local:  # every key is local: the model's own attention, bit for bit
            pos = torch.arange(K, device=q.device)
            return attention(self.tables.rotate(q, pos[q0:]), self.tables.rotate(k, pos), v,
                             cast(float, module.scaling), causal=True, kernel="sdpa")
        return torch.cat(outs, dim=2).to(q.dtype)
