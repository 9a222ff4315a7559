"""distill.data: shards, paired augmentation, normalisation, splitting, determinism, resume."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import random
import tarfile
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from shardkit import encode_members, make_camera, pattern_sample, write_shard

import distill.data as data
from distill.examples import make_example
from distill.pair import Pair, decode_pair, paired_rggb_crop
from distill.records import iter_records
from distill.shardlist import resolve_shards
from distill.shuffle import buffer_shuffle, dealt_shards
from distill.targets import SmallSampleWarning
from rawpairs.cfa import CFA, channel_index_map, unpack
from rawpairs.errors import CorruptInputError
from rawpairs.noise import add_noise
from rawpairs.png import encode_png

RGGB_CHANNELS = np.array([[0, 1], [1, 2]])


def take(loader, n: int) -> list[dict]:
    return list(islice(iter(loader), n))


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["key"] == y["key"]
        for name in ("raw", "rgb", "cls"):
            assert torch.equal(x[name], y[name]), name


def originals(folder: Path) -> dict[str, Pair]:
    """Every sample of a folder's shards, decoded as stored: the oracle for the tests."""
    return {
        r.key: decode_pair(r.members, r.shard, r.key)
        for shard in resolve_shards(str(folder))
        for r in iter_records(shard, 0, 0)
    }


# --- shard lists ------------------------------------------------------------------------------
def test_resolve_shards_folder_glob_brace_list(pair_shards: Path, tmp_path: Path) -> None:
    names = [f"rawpairs-{i:06d}.tar" for i in range(3)]
    expected = [str(pair_shards / n) for n in names]
    (tmp_path / "index.json").write_text("{}")
    assert resolve_shards(str(pair_shards)) == expected
    assert resolve_shards(str(pair_shards / "rawpairs-*.tar")) == expected
    assert resolve_shards(str(pair_shards / "rawpairs-{000002..000000}.tar")) == expected[::-1]
    assert resolve_shards([expected[1], str(pair_shards / "*-000000.tar")]) == [
        expected[1],
        expected[0],
    ]
    assert resolve_shards("pipe:cat /d/s-{0..1}.tar") == [
        "pipe:cat /d/s-0.tar",
        "pipe:cat /d/s-1.tar",
    ]
    assert resolve_shards("https://host/s-{00..01}.tar") == [
        "https://host/s-00.tar",
        "https://host/s-01.tar",
    ]


def test_resolve_shards_errors(pair_shards: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"no shards found at {tmp_path}"):
        resolve_shards(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no shards found at .*nothing-"):
        resolve_shards(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(FileNotFoundError, match=r"rawpairs-000003\.tar does not exist"):
        resolve_shards(str(pair_shards / "rawpairs-{000000..000003}.tar"))


# --- alignment, phase and normalisation -------------------------------------------------------
def check_aligned(batch: dict, pairs: dict[str, Pair], student_input: str) -> list[bool]:
    """Check every site of every example against the stored sample; return which were flipped."""
    flipped = []
    for i, key in enumerate(batch["key"]):
        pair = pairs[key]
        rgb = np.rint(batch["rgb"][i].numpy() * 255).astype(np.int64)
        y, x, colour = rgb
        raw = batch["raw"][i].numpy()
        mosaic = unpack(raw) if student_input == "packed" else raw[0]
        c = mosaic.shape[0]
        # A contiguous window, mirrored or not: rows step by +1, columns by +1 or -1.
        assert np.all(np.diff(y, axis=0) == 1) and np.all(np.diff(y, axis=1) == 0)
        step = np.diff(x, axis=1)
        assert (
            np.all(step == step[0, 0]) and abs(step[0, 0]) == 1 and np.all(np.diff(x, axis=0) == 0)
        )
        flipped.append(bool(step[0, 0] == -1))
        # Every site has the colour RGGB says, in the RAW (stored CFA) and in the RGB marker.
        rggb = np.tile(RGGB_CHANNELS, (c // 2, c // 2))
        site = channel_index_map(pair.camera.cfa, *pair.mosaic.shape)[y, x]
        np.testing.assert_array_equal(site, rggb)
        np.testing.assert_array_equal(colour, 100 * rggb)
        # Exact normalisation with the black level of the stored position.
        black = pair.camera.black_level_array[y % 2, x % 2]
        counts = pair.mosaic[y, x].astype(np.float32)
        expected = (counts - black) / (np.float32(pair.camera.white_level) - black)
        np.testing.assert_allclose(mosaic, expected, rtol=1e-6, atol=0)
    return flipped


@pytest.mark.parametrize("student_input", ["packed", "mosaic"])
def test_training_crops_are_aligned_rggb_and_exactly_normalised(
    pattern_shards: Path, student_input: str
) -> None:
    pairs = originals(pattern_shards)
    loader = data.make_loader(
        str(pattern_shards), batch_size=4, crop=32, teacher_size=32, seed=3,
        student_input=student_input, shuffle_buffer=4,
    )  # fmt: skip
    flips = []
    for batch in take(loader, 8):
        shape = (4, 16, 16) if student_input == "packed" else (1, 32, 32)
        assert batch["raw"].shape == (4, *shape) and batch["raw"].dtype == torch.float32
        assert batch["rgb"].shape == (4, 3, 32, 32) and batch["cls"].tolist() == [-1] * 4
        flips += check_aligned(batch, pairs, student_input)
    assert 0 < sum(flips) < len(flips)  # both branches were checked


def test_evaluation_is_centre_crop_without_flip(pattern_shards: Path) -> None:
    pairs = originals(pattern_shards)
    loader = data.make_loader(
        str(pattern_shards), batch_size=3, crop=32, teacher_size=32, repeat=False
    )
    batches = list(loader)
    assert [len(b["key"]) for b in batches] == [3, 1]
    for batch in batches:
        assert not any(check_aligned(batch, pairs, "packed"))
        for i, key in enumerate(batch["key"]):
            h, w = pairs[key].mosaic.shape
            y0, x0 = np.rint(batch["rgb"][i, :2, 0, 0].numpy() * 255)
            cfa = pairs[key].camera.cfa
            # Centred within one 2×2 block, on the red site.
            assert abs(y0 + 16 - h / 2) <= 2 and abs(x0 + 16 - w / 2) <= 2
            assert (y0 % 2, x0 % 2) == cfa.red_position


@settings(max_examples=40, deadline=None)
@given(
    cfa=st.sampled_from(list(CFA)),
    h=st.integers(4, 40),
    w=st.integers(4, 40),
    size=st.sampled_from([2, 4, 8, 16]),
    hflip=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_paired_rggb_crop_phase_property(
    cfa: CFA, h: int, w: int, size: int, hflip: bool, seed: int
) -> None:
    y, x = np.mgrid[:h, :w]
    site = channel_index_map(cfa, h, w).astype(np.int64)
    mosaic = (site * 10000 + y * 100 + x).astype(np.uint16)
    rgb = np.stack([y, x, site], -1).astype(np.uint8)
    out, out_rgb = paired_rggb_crop(
        mosaic, rgb, cfa, size, hflip=hflip, rng=np.random.default_rng(seed)
    )
    ch, cw = out.shape
    assert ch % 2 == 0 and cw % 2 == 0 and 0 < ch <= size and 0 < cw <= size
    assert ch == size or ch >= h - 3  # shorter only when the sample is
    np.testing.assert_array_equal(out // 10000, np.tile(RGGB_CHANNELS, (ch // 2, cw // 2)))
    np.testing.assert_array_equal(out % 10000, out_rgb[..., 0].astype(int) * 100 + out_rgb[..., 1])
    assert np.all(np.diff(out_rgb[..., 1].astype(int), axis=1) == (-1 if hflip else 1))


def test_small_samples_are_padded_and_stay_aligned(tmp_path: Path) -> None:
    write_shard(
        tmp_path / "s.tar", [pattern_sample("tiny", CFA.GBRG, 21, 30, (8.0, 9.0, 10.0, 11.0))]
    )
    pairs = originals(tmp_path)
    loader = data.make_loader(str(tmp_path), batch_size=1, crop=24, teacher_size=24, repeat=False)
    with pytest.warns(
        SmallSampleWarning,
        match=r"'tiny' \(21×30, GBRG\) holds only a 18×24 RGGB window, less than the 24×24",
    ):
        (batch,) = list(loader)
    mosaic = unpack(batch["raw"][0].numpy())
    # Trimmed to 20×30; GBRG has red at (1, 0), so 18 whole RGGB rows from row 1 and a centred
    # 24-column window: rows 18–23 are padding, black in both RAW and RGB.
    assert np.all(mosaic[18:] == 0) and np.all(batch["rgb"][0, :, 18:].numpy() == 0)
    assert np.all(mosaic[:18] > 0)
    check_aligned(top_left(batch, 18), pairs, "packed")


def top_left(batch: dict, size: int) -> dict:
    """The top-left ``size``×``size`` window of a batch (``size`` even)."""
    return {
        "raw": batch["raw"][..., : size // 2, : size // 2],
        "rgb": batch["rgb"][..., :size, :size],
        "key": batch["key"],
    }


def locate(crop: np.ndarray, photo: np.ndarray) -> tuple[bool, int, int]:
    """(mirrored, top, left) where ``crop`` occurs exactly in ``photo`` (both uint8 RGB)."""
    size = crop.shape[0]
    for flipped in (False, True):
        image = np.ascontiguousarray(photo[:, ::-1] if flipped else photo)
        score = cv2.matchTemplate(image, crop, cv2.TM_SQDIFF)  # float32: verified exactly below
        top, left = np.unravel_index(int(np.argmin(score)), score.shape)
        if np.array_equal(image[top : top + size, left : left + size], crop):
            return flipped, int(top), int(left)
    raise AssertionError("the RGB crop is not a window of its stored photo")


def test_photo_pairs_stay_aligned(pair_shards: Path) -> None:
    """Real photos through the inverse ISP: find each RGB crop in its stored photo, then the RAW
    must be the stored mosaic at that very place (mirrored alike), RGGB, exactly normalised."""
    pairs = originals(pair_shards)
    loader = data.make_loader(str(pair_shards), batch_size=8, crop=48, teacher_size=48, seed=5)
    flips = []
    for batch in take(loader, 3):
        for i, key in enumerate(batch["key"]):
            pair = pairs[key]
            crop = np.rint(batch["rgb"][i].numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
            flipped, top, left = locate(crop, pair.rgb)
            flips.append(flipped)
            ys = np.arange(top, top + 48)[:, None]
            xs = np.arange(left, left + 48)[None, :]
            xs = pair.mosaic.shape[1] - 1 - xs if flipped else xs
            site = channel_index_map(pair.camera.cfa, *pair.mosaic.shape)[ys, xs]
            np.testing.assert_array_equal(site, np.tile(RGGB_CHANNELS, (24, 24)))
            black = pair.camera.black_level_array[ys % 2, xs % 2]
            expected = (pair.mosaic[ys, xs] - black) / (np.float32(pair.camera.white_level) - black)
            np.testing.assert_allclose(unpack(batch["raw"][i].numpy()), expected, rtol=1e-6)
    assert 0 < sum(flips) < len(flips)


def test_teacher_resize_and_student_modes_agree(pair_shards: Path) -> None:
    common = dict(batch_size=4, crop=64, seed=9, repeat=False)
    (packed,) = take(data.make_loader(str(pair_shards), teacher_size=64, **common), 1)
    (mosaic,) = take(
        data.make_loader(str(pair_shards), teacher_size=40, student_input="mosaic", **common), 1
    )
    assert mosaic["key"] == packed["key"]
    np.testing.assert_array_equal(
        mosaic["raw"][:, 0].numpy(), [unpack(r) for r in packed["raw"].numpy()]
    )
    for big, small in zip(packed["rgb"].numpy(), mosaic["rgb"].numpy(), strict=True):
        resized = cv2.resize(big.transpose(1, 2, 0), (40, 40), interpolation=cv2.INTER_AREA)
        np.testing.assert_allclose(small, resized.transpose(2, 0, 1), atol=1e-6)


# --- splitting, determinism and resume -------------------------------------------------------
def test_evaluation_split_by_rank_and_worker_is_disjoint_and_covering(pair_shards: Path) -> None:
    keys = []
    for rank in range(2):
        loader = data.make_loader(
            str(pair_shards), batch_size=3, crop=32, teacher_size=32, repeat=False,
            rank=rank, world_size=2, num_workers=2,
        )  # fmt: skip
        keys += [k for batch in loader for k in batch["key"]]
    assert len(keys) == 24 and set(keys) == set(originals(pair_shards))


def test_dealing_gives_each_shard_once_per_epoch_to_one_slot() -> None:
    shards = [f"s{i}" for i in range(3)]
    slots = 4
    dealt = {
        s: list(islice(dealt_shards(shards, seed=7, slot=s, slots=slots, repeat=True), 6))
        for s in range(slots)
    }
    per_epoch: dict[int, list[str]] = {}
    for items in dealt.values():
        for epoch, shard in items:
            per_epoch.setdefault(epoch, []).append(shard)
    for epoch in range(7):  # 24 deals cover epochs 0–7 completely
        assert sorted(per_epoch[epoch]) == shards
    orders = {
        tuple(sorted(range(3), key=lambda i: per_epoch[e].index(shards[i]))) for e in range(7)
    }
    assert len(orders) > 1  # the order changes between epochs


def test_every_rank_streams_endlessly_with_uneven_shards(pair_shards: Path) -> None:
    """3 shards on 2 ranks: both ranks keep yielding (no DDP hang), more than an epoch each."""
    for rank in range(2):
        loader = data.make_loader(
            str(pair_shards), batch_size=4, crop=32, teacher_size=32, rank=rank, world_size=2,
            shuffle_buffer=8,
        )  # fmt: skip
        assert len(take(loader, 10)) == 10  # 40 samples > 24 in the dataset


def test_deterministic_under_seed(pair_shards: Path) -> None:
    def run(seed: int) -> list[dict]:
        return take(
            data.make_loader(str(pair_shards), batch_size=4, crop=48, teacher_size=32, seed=seed,
                             shuffle_buffer=8, low_light=(2.0, 8.0)),
            5,
        )  # fmt: skip

    first = run(11)
    assert_same_batches(first, run(11))
    other = run(12)
    assert [b["key"] for b in other] != [b["key"] for b in first]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 50), max_size=40),
    size=st.integers(1, 9),
    max_bytes=st.integers(1, 120),
    seed=st.integers(0, 1000),
)
def test_the_shuffle_buffer_is_bounded_in_records_and_bytes(
    sizes: list[int], size: int, max_bytes: int, seed: int
) -> None:
    pulled: list[int] = []
    emitted: list[int] = []

    def items():
        for i in range(len(sizes)):
            held = [j for j in pulled if j not in emitted]  # the buffer before item i arrives
            assert len(held) <= size
            assert len(held) <= 1 or sum(sizes[j] for j in held) <= max_bytes
            pulled.append(i)
            yield i

    stream = buffer_shuffle(
        items(), size, random.Random(seed), max_bytes=max_bytes, nbytes=lambda i: sizes[i]
    )
    emitted.extend(stream)
    assert sorted(emitted) == list(range(len(sizes)))
    # A budget that never binds leaves the record-bounded order unchanged.
    unbounded = buffer_shuffle(iter(range(len(sizes))), size, random.Random(seed))
    size_of = sizes.__getitem__
    roomy = buffer_shuffle(
        iter(range(len(sizes))), size, random.Random(seed), max_bytes=2**40, nbytes=size_of
    )
    assert list(unbounded) == list(roomy)


def test_resume_is_exact_and_skips_without_decoding(
    pair_shards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = dict(batch_size=3, crop=32, teacher_size=32, seed=4, shuffle_buffer=10)
    fresh = take(data.make_loader(str(pair_shards), **kwargs), 20)  # 60 samples: 2.5 epochs
    decoded = []
    decode = data.decode_pair
    monkeypatch.setattr(data, "decode_pair", lambda m, s, k: decoded.append(k) or decode(m, s, k))
    for k in (1, 9, 17):
        decoded.clear()
        resumed = take(data.make_loader(str(pair_shards), start_batch=k, **kwargs), 20 - k)
        assert_same_batches(resumed, fresh[k:])
        assert len(decoded) == 3 * (20 - k)


def test_resume_with_two_workers(pair_shards: Path) -> None:
    kwargs = dict(batch_size=2, crop=32, teacher_size=32, seed=8, shuffle_buffer=6, num_workers=2)
    fresh = take(data.make_loader(str(pair_shards), **kwargs), 9)
    assert_same_batches(
        take(data.make_loader(str(pair_shards), start_batch=5, **kwargs), 4), fresh[5:]
    )


def test_evaluation_resume(pair_shards: Path) -> None:
    kwargs = dict(batch_size=5, crop=32, teacher_size=32, repeat=False)
    fresh = list(data.make_loader(str(pair_shards), **kwargs))
    assert_same_batches(
        list(data.make_loader(str(pair_shards), start_batch=2, **kwargs)), fresh[2:]
    )
    assert list(data.make_loader(str(pair_shards), start_batch=9, **kwargs)) == []


def test_streamed_urls_give_the_same_batches(pair_shards: Path) -> None:
    """``pipe:`` URLs are read as streams (skipped members are read past), files by seeking."""
    shards = resolve_shards(str(pair_shards))
    kwargs = dict(batch_size=5, crop=32, teacher_size=32, seed=2, shuffle_buffer=6)
    local = take(data.make_loader(shards, **kwargs), 6)
    urls = [f"pipe:cat {s}" for s in shards]
    assert_same_batches(take(data.make_loader(urls, **kwargs), 6), local)
    assert_same_batches(take(data.make_loader(urls, start_batch=4, **kwargs), 2), local[4:])
    files = [f"file:{s}" for s in shards]
    assert_same_batches(take(data.make_loader(files, **kwargs), 6), local)


# --- errors ------------------------------------------------------------------------------------
def one_sample(key: str = "k0") -> dict[str, bytes]:
    camera = make_camera(CFA.RGGB, (0.0,) * 4, 1023.0, 10)
    return encode_members(key, np.zeros((8, 8), np.uint16), np.zeros((8, 8, 3), np.uint8), camera)


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npy_header_only(shape: tuple[int, ...]) -> bytes:
    """A ``.npy`` header declaring ``shape`` uint16, with no data (200000² = 80 GB)."""
    buf = io.BytesIO()
    header = {"descr": "<u2", "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def with_json(**changes: object) -> dict[str, bytes]:
    members = one_sample()
    meta = json.loads(members["json"])
    return {**members, "json": json.dumps({**meta, **changes}).encode()}


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({k: v for k, v in one_sample().items() if k != "raw.npy"}, "no raw.npy member"),
        ({k: v for k, v in one_sample().items() if k != "json"}, "no json member"),
        (
            {**one_sample(), "rgb.png": encode_png(np.zeros((8, 10, 3), np.uint8))},
            "rgb.png is 8×10 but raw.npy is 8×8",
        ),
        ({**one_sample(), "raw.npy": npy(np.zeros((8, 8), np.uint8))}, "2-D uint16 mosaic"),
        ({**one_sample(), "raw.npy": npy_header_only((200000, 200000))}, "json crop is 8×8"),
        ({**one_sample(), "rgb.png": b"not a png"}, "rgb.png is not a PNG"),
        ({**one_sample(), "cls": b"cat"}, "cls is not an ASCII integer"),
        ({**one_sample(), "json": b'{"schema_version": 1}'}, "json is not valid metadata"),
        (with_json(schema_version=4), "schema version 4, this rawpairs reads schema versions"),
    ],
)
def test_bad_samples_name_shard_and_key(tmp_path: Path, members: dict, message: str) -> None:
    shard = write_shard(tmp_path / "bad.tar", [("k0", members)])
    loader = data.make_loader(str(shard), batch_size=1, crop=8, teacher_size=8, repeat=False)
    with pytest.raises(CorruptInputError, match=f"^{shard}: sample 'k0': .*{message}") as err:
        list(loader)
    assert "\n" not in str(err.value)


def garbled(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(64) + data[middle + 64 :]


def test_empty_and_broken_shards(tmp_path: Path) -> None:
    """Every broken tar is a one-line error naming the shard, including the damage that
    ``tarfile`` itself reads as a clean end (a cut at a member boundary, a bad header)."""
    good = write_shard(tmp_path / "good.tar", [(f"k{i}", one_sample(f"k{i}")) for i in range(3)])
    data_bytes = good.read_bytes()
    rng = np.random.default_rng(0)  # incompressible members: the damage is met mid-stream
    noisy_samples = [(f"k{i}", {**one_sample(f"k{i}"), "bin": rng.bytes(50_000)}) for i in range(3)]
    noisy = write_shard(tmp_path / "noisy.tar", noisy_samples).read_bytes()
    with tarfile.open(good) as tar:  # the second sample's first header
        second = next(m.offset for m in tar.getmembers() if m.name.startswith("k1."))
    broken = {
        "empty.tar": (write_shard(tmp_path / "empty.tar", []).read_bytes(), "shard has no samples"),
        "garbage.tar": (b"\x00garbage" * 100, "unreadable tar: not a tar archive"),
        "cut.tar": (data_bytes[:second], "truncated: ends at byte"),
        "header.tar": (
            data_bytes[:second] + b"\x01" * 512 + data_bytes[second + 512 :],
            f"damaged tar header at byte {second}",
        ),
        # Cut mid-block: where the half falls (a header or a member's data) depends on sizes.
        "half.tar": (
            data_bytes[: len(data_bytes) // 2 + 7],
            "(unreadable tar|damaged tar header|truncated)",
        ),
        "garbled.tar.xz": (
            garbled(lzma.compress(noisy)),
            "unreadable tar: Corrupt input data",
        ),
        "garbled.tar.gz": (garbled(gzip.compress(noisy)), "unreadable tar: "),
        "garbled.tar.bz2": (garbled(bz2.compress(noisy)), "unreadable tar: "),
    }
    for name, (content, message) in broken.items():
        path = tmp_path / name
        path.write_bytes(content)
        loader = data.make_loader(str(path), batch_size=1, crop=8, teacher_size=8, repeat=False)
        with pytest.raises(CorruptInputError, match=f"^{path}: {message}") as err:
            list(loader)
        assert "\n" not in str(err.value), name


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"crop": 33}, "crop must be a positive even number"),
        ({"rank": 2, "world_size": 2}, r"rank must lie in \[0, world_size=2\)"),
        ({"student_input": "rgb"}, "student_input must be one of"),
        ({"low_light": (0.5, 2.0)}, "low_light factors must satisfy 1 <= min <= max"),
        ({"shuffle_buffer": 0}, "shuffle_buffer must be an integer >= 1"),
        ({"start_batch": 2, "repeat": False, "num_workers": 2}, "start_batch needs repeat=True"),
    ],
)
def test_bad_arguments(pair_shards: Path, changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        data.make_loader(str(pair_shards), **{"batch_size": 2, **changes})


# --- low light ----------------------------------------------------------------------------------
def test_low_light_noise_statistics() -> None:
    """A flat, noisy capture darkened 4×: mean x/4, variance of a 4× darker capture."""
    shot, read, black, white = 2e-3, 4e-5, 200.0, 4095.0
    camera = make_camera(CFA.GRBG, (black,) * 4, white, 12).replace(
        noise_shot=shot, noise_read=read
    )
    x = 0.7
    # GRBG is re-phased by dropping a column: 258 columns give a full 256×256 RGGB crop.
    captured = add_noise(np.full((256, 258), x, np.float32), shot, read, np.random.default_rng(1))
    mosaic = np.rint(black + captured * (white - black)).astype(np.uint16)
    pair = Pair("flat", mosaic, np.zeros((256, 258, 3), np.uint8), camera, -1)
    example = make_example(
        pair, np.random.default_rng(0), crop=256, teacher_size=256, low_light=(4.0, 4.0)
    )
    raw = example["raw"]
    assert raw.dtype == np.float32 and np.all(example["rgb"] == 0)
    expected_var = shot * x / 4 + read
    assert abs(raw.mean() - x / 4) < 4 * np.sqrt(expected_var / raw.size)
    assert raw.var() == pytest.approx(expected_var, rel=0.03)
    factors = [
        x / make_example(pair, np.random.default_rng(s), crop=8, teacher_size=8,
                              low_light=(2.0, 6.0))["raw"].mean()
        for s in range(200)
    ]  # fmt: skip
    assert min(factors) > 1.8 and max(factors) < 6.6 and np.std(factors) > 0.8


def test_noise_at_load_draws_fresh_noise_with_the_stored_parameters():
    """A ``--noise at_load`` sample gets N(0, shot·x + read) noise per draw, different per rng."""
    camera = make_camera(CFA.GRBG, (64.0, 64.0, 64.0, 64.0), 4095.0, 12)
    x = 0.25
    mosaic = np.full((128, 128), round(64 + x * (4095 - 64)), np.uint16)
    rgb = np.full((128, 128, 3), 128, np.uint8)
    pair = Pair(key="k", mosaic=mosaic, rgb=rgb, camera=camera, cls=-1, noise_at_load=True)
    kwargs = {"crop": 120, "teacher_size": 120, "augment": False}
    a = make_example(pair, np.random.default_rng(0), **kwargs)["raw"]
    b = make_example(pair, np.random.default_rng(1), **kwargs)["raw"]
    again = make_example(pair, np.random.default_rng(0), **kwargs)["raw"]
    np.testing.assert_array_equal(a, again)
    assert not np.array_equal(a, b)
    level = (float(mosaic[0, 0]) - 64) / (4095 - 64)
    expected = camera.noise_shot * level + camera.noise_read
    assert abs(float(a.mean()) - level) < 1e-3
    assert abs(float(a.var()) / expected - 1) < 0.05
    clean = Pair(key="k", mosaic=mosaic, rgb=rgb, camera=camera, cls=-1)
    flat = make_example(clean, np.random.default_rng(0), **kwargs)["raw"]
    assert float(flat.var()) == 0.0
