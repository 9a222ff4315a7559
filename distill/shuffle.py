"""The data order, a function of the seed alone: per-epoch shard permutations dealt to
(rank, worker) slots, the bounded shuffle buffer, and the per-sample generator seeds."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from rawpairs.rng import sample_rng

__all__ = ["buffer_shuffle", "dealt_shards", "example_rng", "shuffle_rng"]

# Domain tags keep the three seed derivations apart even for equal numbers.
_EPOCH_TAG, _SHUFFLE_TAG, _SAMPLE_TAG = 0x45504F43, 0x53485546, 0x53414D50


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([_EPOCH_TAG, seed, epoch]).permutation(n)


def dealt_shards(
    shards: Sequence[str], *, seed: int, slot: int, slots: int, repeat: bool
) -> Iterator[tuple[int, str]]:
    """(epoch, shard) pairs for one slot (``slot = rank + world_size · worker``).

    ``repeat=True``: the endless sequence "permutation of epoch 0, permutation of epoch 1, …"
    (each a function of ``(seed, epoch)``) is dealt round-robin over ``slots``; so in every epoch
    each shard goes to exactly one slot, every slot gets shards even when there are fewer shards
    than slots, and no slot runs dry. ``repeat=False``: one pass over ``shards`` in the given
    order, dealt the same way (epoch 0).
    """
    if not 0 <= slot < slots:
        raise ValueError(f"slot {slot} outside [0, {slots})")
    n = len(shards)
    if not repeat:
        for i in range(slot, n, slots):
            yield 0, shards[i]
        return
    i, epoch, order = slot, -1, np.arange(0)
    while True:
        if i // n != epoch:
            epoch = i // n
            order = _epoch_order(n, seed, epoch)
        yield epoch, shards[order[i % n]]
        i += slots


def buffer_shuffle(
    items: Iterable[Any],
    size: int,
    rng: random.Random,
    *,
    max_bytes: int | None = None,
    nbytes: Callable[[Any], int] = lambda item: 0,
) -> Iterator[Any]:
    """Shuffle a stream with a buffer of at most ``size`` items and ``max_bytes`` bytes
    (``nbytes(item)``: an item's size; ``size=1``: the input order).

    While the buffer is within both bounds, each new item replaces a uniformly drawn buffered
    item, which is emitted (the buffer holds ``size`` items); when the new item would take the
    buffer over ``max_bytes``, uniformly drawn items are emitted until it fits (or the buffer is
    empty: at least one item is always held). At the end the rest is emitted in random order.
    The output order depends only on ``rng`` and the sequence of ``nbytes``, never on the items'
    contents or on timing.
    """
    if size < 1:
        raise ValueError(f"shuffle buffer size must be >= 1, got {size}")
    buf: list[Any] = []
    held = 0
    for item in items:
        n = nbytes(item)
        while buf and max_bytes is not None and held + n > max_bytes:
            i = rng.randrange(len(buf))
            out = buf[i]
            buf[i] = buf[-1]
            buf.pop()
            held -= nbytes(out)
            yield out
        if len(buf) < size:
            buf.append(item)
            held += n
            continue
        i = rng.randrange(size)
        out, buf[i] = buf[i], item
        held += n - nbytes(out)
        yield out
    rng.shuffle(buf)
    yield from buf


def shuffle_rng(seed: int, slot: int, slots: int) -> random.Random:
    """The shuffle buffer's generator of one (rank, worker) slot."""
    state = np.random.SeedSequence([_SHUFFLE_TAG, seed, slot, slots]).generate_state(2)
    return random.Random(int(state[0]) << 32 | int(state[1]))


def example_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The generator of one sample's augmentation in ``epoch``: a function of ``(seed, epoch,
    key)`` only, so an example never depends on timing or on the worker that makes it."""
    return sample_rng(_SAMPLE_TAG, seed, epoch, _key_hash(key))
