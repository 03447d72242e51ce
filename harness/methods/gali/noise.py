"""GALI's logit noise from a counter-based generator (see docs/methods/gali.md, "Noise").

Every noise value is a pure function of (seed, layer, head, query token index a, key token index b): no generator
state, so a run's noise does not depend on block sizes, the chunk schedule, the order of the computation or the
device (integer arithmetic is exact everywhere; only the final float transform may differ in the last bit between
backends). The example enters through the seed (`Method.start_example(seed)` gets a per-example seed).

Construction: a 64-bit stream key k = splitmix64(seed, layer) (Python ints); a 32-bit row hash A[h, a] and column
hash B[b] (murmur3 `fmix32` of the key and the index, computed on small vectors in int64); per element
x = A[h, a] ^ B[b] is finished by two multiply–xorshift rounds in int32 (wrapping). Uniform values take the top 23
bits of x. Gaussian values take the top 16 bits i and read `normal_table()[i]` = √2·erfinv((2i + 1)/2^16 − 1), the
exact inverse normal CDF at the centre of the i-th of 2^16 equiprobable bins (computed once in float64, so every
device reads the same fp32 values): a discrete N(0, 1) whose Kolmogorov distance to the continuous one is at most
2^-17, |z| ≤ 4.33 (a table read instead of an erfinv per element). The statistics are the reference's
(`noise_for_block`): distribution, std rule, row mean / max scaling and the `addon_relcoef` mask.

`FactoredGaussian` is the fast alternative (`noise_sampler = "factored"`): z[a, b] = <u(a), w(β(a), b)> with u(a) a
random unit vector in R^r (per head and query) and w(β, b) iid N(0, I_r) per key, refreshed for every block β of
`FACTOR_BLOCK` consecutive query indices. Each query's noise over the keys is exactly iid N(0, 1), but queries of
one block are correlated (correlation <u(a), u(a')>, about ±1/√r), so it is not the reference's iid field.
"""

from __future__ import annotations

import math

import torch

_M64 = (1 << 64) - 1
_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B97F4A7C15
_ROW = 0x632BE59BD9B4E019
_C1, _C2 = 0x2C1B3C6D, 0x297A2D39  # int32 multipliers of the per-element rounds (both < 2^31)
SQRT2 = math.sqrt(2.0)
NORMAL_BITS = 16  # Gaussian draws: the top 16 hash bits index a table of 2^16 inverse-CDF values (256 KiB, cache-sized)
_TABLES: dict[str, torch.Tensor] = {}


def normal_table(device: torch.device | str = "cpu") -> torch.Tensor:
    """fp32 [2^16]: entry i is √2·erfinv((2i + 1)/2^16 − 1) = Φ⁻¹((i + ½)/2^16), computed in float64 (cached)."""
    key = str(device)
    if key not in _TABLES:
        n = 1 << NORMAL_BITS
        centre = (2 * torch.arange(n, dtype=torch.float64) + 1) / n - 1
        _TABLES[key] = (torch.erfinv(centre) * SQRT2).to(torch.float32).to(device)
    return _TABLES[key]


def hash_to_normal(x: torch.Tensor) -> torch.Tensor:
    """N(0, 1) fp32 of the mixed int32 hashes x (any shape), consuming x: the table entry of its top 16 bits."""
    idx = x.bitwise_right_shift_(32 - NORMAL_BITS).bitwise_and_((1 << NORMAL_BITS) - 1)
    return normal_table(x.device).index_select(0, idx.view(-1)).view(x.shape)


def splitmix64(x: int) -> int:
    """One splitmix64 step of a Python int (the stream key)."""
    x = (x + _GOLDEN) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser on int64 tensors holding values in [0, 2^32)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def _as_int32(x: torch.Tensor) -> torch.Tensor:
    """Values in [0, 2^32) as the int32 with the same bits."""
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


class NoiseStream:
    """The noise of one layer: `uniform_bits(heads, a, b)` for query indices a and key indices b."""

    def __init__(self, seed: int, layer: int, salt: int = 0):
        key = splitmix64(splitmix64(splitmix64(int(seed) & _M64) ^ (int(layer) & _M64)) ^ int(salt))
        self.row_key = key & _M32
        self.col_key = (key >> 32) & _M32
        self._col_memo: dict[str, torch.Tensor] = {}  # column hashes of 0..n−1 per device (pure: safe to keep)

    def rows(self, heads: int, a: torch.Tensor) -> torch.Tensor:
        """int32 [heads, n] row hashes of query token indices a [n]."""
        h = torch.arange(heads, device=a.device, dtype=torch.int64)[:, None]
        x = (self.row_key ^ ((h * _ROW) & _M32)) + a.to(torch.int64)[None, :] * 0x9E3779B1
        return _as_int32(_fmix32(_fmix32(x)))

    def cols(self, b: torch.Tensor) -> torch.Tensor:
        """int32 [n] column hashes of key token indices b [n]."""
        return _as_int32(_fmix32(_fmix32(self.col_key + b.to(torch.int64) * 0x85EBCA77)))

    def col_range(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """`cols(arange(n))`, kept and grown across calls (decode steps ask for one more key each time)."""
        memo = self._col_memo.get(str(device))
        if memo is None or memo.shape[0] < n:
            memo = self.cols(torch.arange(max(n, 2 * memo.shape[0] if memo is not None else n), device=device))
            self._col_memo[str(device)] = memo
        return memo[:n]

    @staticmethod
    def mix(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """The per-element int32 hashes of row hashes [H, n] and column hashes [m]: [H, n, m] (both rounds)."""
        x = torch.bitwise_xor(rows[:, :, None], cols[None, None, :])
        x.mul_(_C1)
        x.bitwise_xor_(x >> 15)
        return x.mul_(_C2)

    def hashes(self, heads: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mixed int32 hashes [heads, len(a), len(b)] of query indices a and key indices b."""
        return self.mix(self.rows(heads, a), self.cols(b))

    def bits(self, heads: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-element hashes: int32 [heads, len(a), len(b)], the top 23 bits as a signed value in [−2^22, 2^22)."""
        return self.hashes(heads, a, b).bitwise_right_shift_(9)  # arithmetic shift: 23 uniform bits, signed

    def uniform(self, heads: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """U[0, 1) fp32 [heads, len(a), len(b)] (23-bit resolution)."""
        return self.bits(heads, a, b).to(torch.float32).mul_(2.0**-23).add_(0.5)

    def gaussian(self, heads: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """N(0, 1) fp32 [heads, len(a), len(b)]: the inverse normal CDF at 2^16 equiprobable bin centres."""
        return hash_to_normal(self.hashes(heads, a, b))

    def standard(self, kind: str, heads: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The standard draw of `kind` ("gaussian": N(0,1), "uniform": U[0,1))."""
        return self.gaussian(heads, a, b) if kind == "gaussian" else self.uniform(heads, a, b)


FACTOR_RANK = 8  # r: 2r extra head dimensions (64 -> 80 costs nothing extra in the CPU flash kernel)
FACTOR_BLOCK = 1024  # queries a with the same a // FACTOR_BLOCK share the key factors w


class FactoredGaussian:
    """Rank-r Gaussian noise factors of one layer: `rows(heads, a)` [heads, n, r], `keys(block, b)` [r, len(b)]."""

    def __init__(self, seed: int, layer: int, rank: int = FACTOR_RANK):
        self.rank = rank
        self._u = NoiseStream(seed, layer, salt=1)
        self._w = NoiseStream(seed, layer, salt=2)
        self._memo: tuple[int, str, int, torch.Tensor] | None = None  # latest block, device, valid keys, buffer

    def rows(self, heads: int, a: torch.Tensor) -> torch.Tensor:
        """Unit vectors u(a): fp32 [heads, len(a), r]."""
        u = self._u.gaussian(heads, a, torch.arange(self.rank, device=a.device))
        return u / u.norm(dim=-1, keepdim=True)

    def keys(self, block: int, n_keys: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Key factors w(block, b) of keys b = 0..n_keys−1: fp32 [r, n_keys], iid N(0, 1).

        The latest block's factors are kept in a growing buffer (a decode step draws only the new key's)."""
        memo, start, buf = self._memo, 0, None
        if memo is not None and memo[0] == block and memo[1] == str(device):
            start, buf = memo[2], memo[3]
            if start >= n_keys:
                return buf[:, :n_keys]
        rows = block * self.rank + torch.arange(self.rank, device=device)
        new = self._w.gaussian(1, rows, torch.arange(start, n_keys, device=device))[0]
        if buf is None or buf.shape[1] < n_keys:
            grown = torch.empty(self.rank, n_keys + max(64, n_keys // 8), device=device)
            if buf is not None and start:
                grown[:, :start] = buf[:, :start]
            buf = grown
        buf[:, start:n_keys] = new
        self._memo = (block, str(device), n_keys, buf)
        return buf[:, :n_keys]

    def standard(self, heads: int, a: torch.Tensor, n_keys: int) -> torch.Tensor:
        """The materialised z [heads, len(a), n_keys] of keys 0..n_keys−1 (decode steps, tests)."""
        first, last = int(a[0]) // FACTOR_BLOCK, int(a[-1]) // FACTOR_BLOCK
        if first == last:
            return self._product(self.rows(heads, a), self.keys(first, n_keys, a.device))
        out = torch.empty(heads, a.shape[0], n_keys, device=a.device)
        blocks = torch.div(a, FACTOR_BLOCK, rounding_mode="floor")
        for block in range(first, last + 1):
            sel = blocks == block
            if bool(sel.any()):
                out[:, sel] = self._product(self.rows(heads, a[sel]), self.keys(block, n_keys, a.device))
        return out

    @staticmethod
    def _product(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """[heads, n, r] · [r, K] -> [heads, n, K] as one matrix product (no batched broadcast)."""
        heads, n, r = u.shape
        return torch.mm(u.reshape(heads * n, r), w).view(heads, n, w.shape[1])
