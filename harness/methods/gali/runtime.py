"""The GALI attention kernel installed in every layer: per-forward plans, cached tables, rotated-key buffers.

Keys are cached un-rotated (positions are rebuilt at every forward), but most rotations stay valid from one
decode step to the next. Within the window positions never change: each layer keeps its rotated keys in a buffer and
rotates only the new key (bit-identical to rotating every key). Beyond it, the interpolated region of a group size g
keeps its positions while the unit-spaced tail shifts by one at every step; `gali.decode.TwoFrameDecoder` attends
to the tail in the token frame (where its distances are token distances) and merges it with the interpolated region
by log-sum-exp, so a step rotates only the keys entering the interpolated region and the new key.

Buffers are kept for decode steps only (a prefill forward rotates into a temporary and drops the layer's buffers),
so they cost memory (about one rotated copy of the keys) while decoding, never during prefill. One sequence at a
time: any prefill forward, or `reset()` (called by `Gali.prefill_chunks`), starts over; a step that does not
continue the previous forward (other group size or length) rotates every key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import torch

from harness.methods.gali.decode import TwoFrameDecoder
from harness.methods.gali.fused import add_noise_
from harness.methods.gali.kernel import (
    IntegerTables,
    NoiseSpec,
    Plan,
    group_tables,
    make_plan,
    rotate_segments,
    run_plan,
)
from harness.methods.gali.noise import FactoredGaussian, NoiseStream
from harness.methods.gali.positions import layout, positions, positions_at


@dataclass
class _Rotated:
    """One layer's rotated keys of its latest forward."""

    frame: tuple | None
    n_keys: int
    stable: int
    buf: torch.Tensor  # [b, Hkv, capacity, d]


class GaliKernel:
    """Shared by all layers; plans (positions and RoPE tables) are memoised per (K, s)."""

    #: scores per explicit query block (b·H·rows·K); bounds the noise path's memory
    block_elements: int = 2**25

    def __init__(self, tables, window: int, local_window: int, *, interpolate: bool = True, reference: bool = False,
                 noise: NoiseSpec | None = None, seed: int = 42):
        self.tables = tables  # RopeTables: inv_freq, attention_scaling
        self.window = window
        self.local_window = local_window
        self.interpolate = interpolate
        self.reference = reference
        self.noise = noise or NoiseSpec()
        self._seed = seed
        self._plans: dict[tuple[int, int, str], Plan] = {}
        self._streams: dict[int, NoiseStream] = {}
        self._factors: dict[int, FactoredGaussian] = {}
        self._tables: dict[str, IntegerTables] = {}
        self._groups: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._rotated: dict[int, _Rotated] = {}
        self._decoder = TwoFrameDecoder()
        self._last: tuple[int, torch.device, Plan] | None = None

    @property
    def last_positions(self) -> torch.Tensor | None:
        """Positions of all keys of the latest forward (inspection, tests)."""
        if self._last is None:
            return None
        n_keys, device, plan = self._last
        if plan.k_pos is None:
            return positions(n_keys, self.window, self.local_window, device=device)
        return plan.k_pos

    # ---- life cycle ----
    def reset(self) -> None:
        """Start a new sequence: forget the rotated-key buffers."""
        self._rotated.clear()
        self._decoder.reset()

    def set_seed(self, seed: int) -> None:
        """Key the noise with this seed (called per example with the example's seed)."""
        self._seed = seed
        self._streams.clear()
        self._factors.clear()

    @contextlib.contextmanager
    def without_noise(self) -> Iterator[None]:
        """Temporarily run the noise-free path (deterministic logits, e.g. for consistency checks)."""
        noise, self.noise = self.noise, NoiseSpec()
        self._plans.clear()
        try:
            yield
        finally:
            self.noise = noise
            self._plans.clear()

    def stream(self, layer: int) -> NoiseStream:
        """The counter-based noise of one layer (a pure function of seed, layer, head and token indices)."""
        if layer not in self._streams:
            self._streams[layer] = NoiseStream(self._seed, layer)
        return self._streams[layer]

    def factors(self, layer: int) -> FactoredGaussian:
        """The factored noise of one layer (sampler "factored")."""
        if layer not in self._factors:
            self._factors[layer] = FactoredGaussian(self._seed, layer)
        return self._factors[layer]

    # ---- plans ----
    def _integer_table(self, device: torch.device) -> IntegerTables:
        table = self._tables.get(str(device))
        if table is None:  # cos/sin of the integer positions 0..M: every plan slices or gathers from it
            inv_freq = self.tables.inv_freq.to(device)
            table = self._tables[str(device)] = IntegerTables(self.window + 1, inv_freq,
                                                              self.tables.attention_scaling, device)
        return table

    def plan(self, n_keys: int, n_queries: int, device: torch.device) -> Plan:
        """Positions and tables for a forward with `n_queries` queries (the last of `n_keys` keys)."""
        key = (n_keys, n_queries, str(device))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._make_plan(n_keys, n_queries, device)
            if len(self._plans) >= 4:
                self._plans.pop(next(iter(self._plans)))
            self._plans[key] = plan
        self._last = (n_keys, device, plan)
        return plan

    def _make_plan(self, n_keys: int, n_queries: int, device: torch.device) -> Plan:
        table = self._integer_table(device)
        start = n_keys - n_queries
        if n_keys <= self.window:  # within the window: the original model's integer positions
            pos = torch.arange(n_keys, device=device, dtype=torch.float64)
            return Plan(table.cos[start:n_keys], table.sin[start:n_keys], [(table.cos[:n_keys], table.sin[:n_keys])],
                        0, pos[start:], pos, frame=("window",), stable=n_keys)
        if self.interpolate and not self.reference:
            return self._interpolation_plan(n_keys, n_queries, table, device)
        pos = positions(n_keys, self.window, self.local_window, device=device)
        return make_plan(pos[start:], pos, self.tables.inv_freq.to(device), self.tables.attention_scaling,
                         interpolate=self.interpolate, reference=self.reference, noise=self.noise, table=table)

    def _interpolation_plan(self, n_keys: int, n_queries: int, table: IntegerTables, device: torch.device) -> Plan:
        """The default path (fp32 weights): cached interpolated rows of the current group size + the integer tail."""
        lay = layout(n_keys, self.window, self.local_window)
        key = (str(device), lay.group)
        cached = self._groups.get(key)
        if cached is None or cached[0].shape[0] < lay.n_interp:
            capacity = min(lay.group * self.window, max(lay.n_interp, 2 * (cached[0].shape[0] if cached else 0)))
            for stale in [k for k in self._groups if k[0] == key[0]]:  # one group size per device at a time
                del self._groups[stale]
            cached = self._groups[key] = group_tables(lay.group, capacity, table)
        segments = [(cached[0][:lay.n_interp], cached[1][:lay.n_interp]),
                    (table.cos[lay.slots:self.window], table.sin[lay.slots:self.window])]
        q_pos = positions_at(torch.arange(n_keys - n_queries, n_keys, device=device), n_keys, self.window,
                             self.local_window)
        q_cos, q_sin = table(torch.ceil(q_pos).to(torch.long))
        active = self.noise.active
        r_nonzero = None
        if active:  # fractional positions u + j/g with j = idx mod g ≠ 0: exactly the keys with r ≠ 0
            idx = torch.arange(n_keys, device=device)
            r_nonzero = (idx < lay.n_interp) & (idx % lay.group != 0)
        return Plan(q_cos, q_sin, segments, n_queries if active else 0, q_pos, None, r_nonzero=r_nonzero,
                    frame=("group", lay.group), stable=lay.n_interp)

    # ---- rotated keys ----
    def _rotated_keys(self, layer: int, k: torch.Tensor, plan: Plan, n_queries: int) -> torch.Tensor:
        """Keys rotated with the plan's tables, re-rotating only the rows whose position changed."""
        n_keys = k.shape[-2]
        prev = self._rotated.get(layer)
        first = 0
        if (prev is not None and prev.frame == plan.frame and prev.n_keys == n_keys - n_queries
                and prev.buf.shape[:2] == k.shape[:2] and prev.buf.shape[-1] == k.shape[-1]
                and prev.buf.dtype == k.dtype and prev.buf.device == k.device
                and prev.buf.is_inference() == torch.is_inference_mode_enabled()):
            first = min(prev.stable, n_keys - n_queries)
        if prev is not None and first and prev.buf.shape[-2] >= n_keys:
            buf = prev.buf
        else:
            b, h, _, d = k.shape
            buf = k.new_empty(b, h, n_keys + max(64, n_keys // 8), d)  # room for later decode steps
            if first and prev is not None:
                buf[..., :first, :] = prev.buf[..., :first, :]
        rotate_segments(k, plan.k_segments, first, out=buf[..., :n_keys, :])
        self._rotated[layer] = _Rotated(plan.frame, n_keys, plan.stable, buf)
        return buf[..., :n_keys, :]

    def __call__(self, module: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        n_keys, n_queries = k.shape[-2], q.shape[-2]
        layer, scale = cast(int, module.layer_idx), cast(float, module.scaling)
        plan = self.plan(n_keys, n_queries, q.device)
        noisy = plan.n_explicit > 0 and self.noise.active
        k_rot = None
        frame = plan.frame
        decode = (n_queries == 1 and frame is not None and (not plan.n_explicit or frame[0] == "group")
                  and not torch.is_grad_enabled())
        if decode and frame is not None and frame[0] == "group":  # beyond the window: tail in own frame (gali.decode)
            self._rotated.pop(layer, None)
            perturb = self._decode_noise(layer, n_keys, plan) if noisy else None
            return self._decoder.attend(layer, q, k, v, scale, group=frame[1],
                                        n_interp=plan.stable, interp_tables=plan.k_segments[0],
                                        q_tables=(plan.q_cos, plan.q_sin), inv_freq=self.tables.inv_freq,
                                        scaling=self.tables.attention_scaling, perturb=perturb)
        self._decoder.reset(layer)
        if decode:  # within the window: keep this step's rotations for the next one
            k_rot = self._rotated_keys(layer, k, plan, n_queries)
        else:  # prefill forwards rotate into a temporary (no buffer held while activations are large)
            self._rotated.pop(layer, None)
        return run_plan(plan, q, k, v, scale, noise=self.noise if noisy else None,
                        stream=self.stream(layer) if noisy else None,
                        factors=self.factors(layer) if noisy else None, block_elements=self.block_elements,
                        k_rot=k_rot)

    def _decode_noise(self, layer: int, n_keys: int, plan: Plan):
        """The noise of a decode step's scores [b, H, 1, K] (token order: interpolated region, then the tail)."""
        stream, spec = self.stream(layer), self.noise

        def perturb(scores: torch.Tensor) -> torch.Tensor:
            a = torch.tensor([n_keys - 1], device=scores.device)
            z = None
            if spec.sampler == "factored":
                z = self.factors(layer).standard(scores.shape[1], a, n_keys)
            assert plan.r_nonzero is not None  # group-frame plans with noise carry their weights
            return add_noise_(scores, a, n_keys, spec, stream, plan.r_nonzero.to(scores.device), z=z)

        return perturb
