"""Point shards: a long job over many points cut into fixed-size shards, each with its own seed.

A shard's size is fixed by the job (an audit step, a CERTIFY call), never by the number of workers, and its seed
derives from the job's seed and the shard's index, so the shards and their results are the same whichever executor
ran them and however many workers it had. Shard 0 keeps the job's own seed: a job that fits in one shard gives what
the unsharded job gives.
"""

from __future__ import annotations

import hashlib

from sparring.errors import ParameterError

__all__ = ["shard_ranges", "shard_seed"]


def shard_ranges(n: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in consecutive shards of ``size`` points (the last may be
    shorter). ``n = 0`` gives one empty shard, so a job always has at least one task."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ParameterError(f"the shard size must be an integer >= 1 (points per shard); got {size!r}.")
    if n <= 0:
        return [(0, 0)]
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def shard_seed(seed: int, index: int) -> int:
    """The seed of shard ``index`` of a job seeded with ``seed``: ``seed`` itself for shard 0, else the first 32 bits
    of ``sha256("{seed}:shard:{index}")`` (independent streams, the same on every machine)."""
    if index == 0:
        return int(seed)
    return int(hashlib.sha256(f"{int(seed)}:shard:{index}".encode()).hexdigest()[:8], 16)
