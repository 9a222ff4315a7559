"""Where pairs are read for training: RAW–RGB shards → aligned teacher–student batches
(:func:`make_loader`, :class:`PairStream`).

Data flow (one DataLoader worker; see ``docs/data.md`` for the guarantees and their proofs):

1. :func:`distill.shardlist.resolve_shards` turns a folder, glob, brace pattern or URL into a
   shard list.
2. :func:`distill.shuffle.dealt_shards` deals shards to this (rank, worker) "slot" from the
   endless sequence of per-epoch shard permutations (one pass over the sorted list when
   ``repeat=False``).
3. :func:`distill.records.iter_records` walks each tar with :func:`rawpairs.tarwalk.walk_tar`
   (members grouped by key). Samples that arrive while a resumed run replays the batches an
   earlier run consumed are passed on as placeholders whose members are not read (unless still
   buffered after the replay: :func:`distill.records.read_record`).
4. :func:`distill.shuffle.buffer_shuffle` shuffles the *undecoded* records with a seeded buffer
   bounded in records (``shuffle_buffer``) and in bytes (``shuffle_bytes`` per process, from the
   tar headers).
5. :func:`distill.pair.decode_pair` checks and decodes a sample with
   :func:`rawpairs.schema.decode_sample` (the same checks as ``rawpairs inspect --verify``).
6. :func:`distill.examples.make_example` crops, flips, re-phases to RGGB, normalises and
   (optionally) darkens, with a generator derived from ``(seed, epoch, key)``
   (:func:`distill.shuffle.example_rng`) so the result never depends on timing. An at-load
   sample (``rawpairs build --unprocess at_load``: RGB + recipe, no stored RAW) gets the same
   crop and flip of its RGB, and its RAW is made by :mod:`distill.at_load`: here on the CPU,
   or, with ``raw_on_device``, by the trainer on its device from the batch's ``recipe``
   (:func:`distill.unprocess.make_raw`).
7. Examples are stacked into batches inside the worker; the DataLoader interleaves workers
   round-robin, which :class:`PairStream` accounts for when resuming.

Units: the student input is linear sensor signal with the black level removed per CFA position
and divided by ``white − black`` (0 = black, 1 = saturation; not clipped); the teacher input is
sRGB in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from distill.at_load import recipe_batch
from distill.config import LoaderConfig
from distill.examples import make_example
from distill.pair import decode_pair
from distill.records import Record, iter_records, read_record
from distill.shardlist import is_url, resolve_shards
from distill.shuffle import buffer_shuffle, dealt_shards, example_rng, shuffle_rng

__all__ = ["PairStream", "make_loader", "make_loader_from"]


def _collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    batch = {
        "raw": torch.from_numpy(np.stack([e["raw"] for e in examples])),
        "rgb": torch.from_numpy(np.stack([e["rgb"] for e in examples])),
        "wb": torch.from_numpy(np.stack([e["wb"] for e in examples])),
        "cls": torch.tensor([e["cls"] for e in examples], dtype=torch.int64),
        "key": [e["key"] for e in examples],
    }
    if "isp" in examples[0]:
        batch["isp"] = torch.from_numpy(np.stack([e["isp"] for e in examples]))
    rows = [i for i, e in enumerate(examples) if "recipe" in e]
    if rows:
        batch["recipe"] = recipe_batch([examples[i]["recipe"] for i in rows], rows)
    return batch


class PairStream(IterableDataset):
    """Batches of teacher–student examples for one rank; each DataLoader worker makes whole batches.

    The DataLoader takes batches from its ``workers`` workers round-robin, so global batch ``b``
    is batch ``b // workers`` of worker ``b % workers``. To resume at ``start_batch = k``, worker
    ``i`` plays the role of worker ``(i + k) % workers`` of the fresh run and skips the batches
    that worker had already made (see ``docs/data.md``). Use it through :func:`make_loader`.
    """

    def __init__(self, shards: Sequence[str], config: LoaderConfig) -> None:
        super().__init__()
        self.shards = list(shards)
        self.config = config
        self.workers = max(1, config.num_workers)
        self.shuffle_buffer = config.shuffle_buffer if config.repeat else 1
        self.shuffle_bytes = max(1, config.shuffle_bytes // self.workers)  # per worker

    def _records(self, slot: int, slots: int, skip: Callable[[int], bool]) -> Iterator[Record]:
        position = 0
        for epoch, shard in dealt_shards(
            self.shards, seed=self.config.seed, slot=slot, slots=slots, repeat=self.config.repeat
        ):
            # A stream reads past a skipped sample anyway, and could not read it again.
            for record in iter_records(shard, epoch, position, None if is_url(shard) else skip):
                yield record
            position = record.position + 1

    def _example(self, record: Record) -> dict[str, Any]:
        """The example of ``record`` (its members read now if a resume passed it on unread)."""
        if record.members is None:
            record = read_record(record)
        assert record.members is not None
        config = self.config
        return make_example(
            decode_pair(record.members, record.shard, record.key),
            example_rng(config.seed, record.epoch, record.key),
            crop=config.crop,
            teacher_size=config.teacher_size,
            student_input=config.student_input,
            augment=config.repeat,
            hflip=config.hflip,
            low_light=config.low_light,
            isp_reference=config.isp_reference,
            fresh_cameras=config.fresh_cameras,
            raw_on_device=config.raw_on_device,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        config = self.config
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if workers != self.workers:
            raise RuntimeError(f"PairStream built for {self.workers} workers runs on {workers}")
        role = (worker + config.start_batch) % workers
        n_skip = len(range(role, config.start_batch, workers)) * config.batch_size
        slot, slots = config.rank + config.world_size * role, config.world_size * workers
        # A record that arrives while the first n_skip outputs (the batches made before
        # start_batch) are being replayed is passed on unread; the few of them still buffered
        # when the replay ends are read when they are emitted (docs/data.md).
        emitted = 0
        records = buffer_shuffle(
            self._records(slot, slots, lambda position: emitted < n_skip),
            self.shuffle_buffer,
            shuffle_rng(config.seed, slot, slots),
            max_bytes=self.shuffle_bytes,
            nbytes=lambda record: record.nbytes,
        )
        batch: list[dict[str, Any]] = []
        for index, record in enumerate(records):
            emitted = index + 1
            if index < n_skip:
                continue
            batch.append(self._example(record))
            if len(batch) == config.batch_size:
                yield _collate(batch)
                batch = []
        if batch:
            yield _collate(batch)


def make_loader_from(shards: str | Sequence[str], config: LoaderConfig) -> DataLoader:
    """Batches of aligned RAW (student) / RGB (teacher) examples from RAW–RGB pair shards, read
    as ``config`` says (checked by :class:`~distill.config.LoaderConfig`).

    Each batch: ``raw`` float32 [B, 4, crop/2, crop/2] (``"packed"``, RGGB planes) or
    [B, 1, crop, crop] (``"mosaic"``, RGGB phase), black level removed per CFA position and divided
    by ``white − black`` (not clipped); ``rgb`` float32 [B, 3, teacher_size, teacher_size], sRGB in
    [0, 1]; ``wb`` float32 [B, 3], each sample's recorded white-balance gains (R, G, B);
    ``cls`` int64 [B] (−1: no label); ``key`` list[str]; with ``isp_reference`` also ``isp``
    float32 [B, 3, teacher_size, teacher_size], the RAW through the forward ISP
    (:func:`distill.examples.make_example`).

    At-load samples (``rawpairs build --unprocess at_load``) mix freely with stored ones: their
    RAW is made in the worker on the CPU, or with ``raw_on_device`` left to the consumer: their
    ``raw`` rows are zeros and the batch has a ``recipe`` (tensors, one row per at-load example,
    :data:`distill.unprocess.RECIPE_KEYS`) that :func:`distill.unprocess.make_raw` turns into
    those rows on any device (the trainer does). ``fresh_cameras``: at-load samples get a new
    camera and noise each epoch (:func:`distill.examples.make_example`).

    ``repeat=True``: an endless, shuffled, augmented stream (random crop, flips); the trainer stops
    it after its number of steps. ``repeat=False``: one pass, in shard order, centre crops, no flip;
    the last batch of each worker may be short. Deterministic for given (shards, seed, rank,
    world_size, num_workers); the batches from ``start_batch`` on equal those of a run started at 0
    from that batch on. Shards are split by rank, then by worker, without duplicates.

    The shuffle buffer of each worker holds at most ``shuffle_buffer`` undecoded records and
    ``shuffle_bytes / max(1, num_workers)`` bytes (always at least one record).
    """
    dataset = PairStream(resolve_shards(shards), config)
    return DataLoader(dataset, batch_size=None, num_workers=config.num_workers)


def make_loader(shards: str | Sequence[str], **settings: Any) -> DataLoader:
    """:func:`make_loader_from` with the :class:`~distill.config.LoaderConfig` of ``settings``
    (its fields as keywords: ``make_loader("shards/", batch_size=32, crop=224)``)."""
    return make_loader_from(shards, LoaderConfig(**settings))
