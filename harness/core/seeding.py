"""Seeds and shards derived from an example's identity, so results do not depend on order, batching or sharding."""

from __future__ import annotations

import hashlib


def derive_seed(run_seed: int, subset: str, example_id: str) -> int:
    """A 31-bit seed from the run seed and the example's identity (order- and shard-independent)."""
    digest = hashlib.sha256(f"{run_seed}|{subset}|{example_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def in_shard(example_id: str, shard: tuple[int, int]) -> bool:
    """Deterministic split by example id: shard i of n takes ids whose hash is i mod n."""
    i, n = shard
    if n <= 1:
        return True
    return int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:8], "little") % n == i
