"""Issue 19: the build never writes, reads or reports the wrong thing without a word.

Each test failed on the code before its fix (docs/guarantees.md lists them)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from skimage import data

from rawpairs.build import build
from rawpairs.cli import main as cli
from rawpairs.sample import BuildConfig, sample_key
from rawpairs.schema import read_shard


def _photo(name: str, side: int = 64) -> np.ndarray:
    rgb = getattr(data, name)()[..., :3]
    scale = side / max(rgb.shape[:2])
    size = (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _write(path: Path, name: str = "chelsea", side: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(_photo(name, side), cv2.COLOR_RGB2BGR))
    return path


def _keys(out: Path) -> list[str]:
    return [s.key for shard in sorted(out.glob("rawpairs-*.tar")) for s in read_shard(shard)]


# Item 1: keys valid for every reader --------------------------------------------------------

LONG = (
    "Holidays/Italy_ (Rome)/Colosseum and Forum at sunset with the family, "
    + "x" * 17
    + " eveni.jpg"
)


@pytest.mark.parametrize(
    "relpath",
    [
        LONG,
        "a/" + "_" * 100 + "b.jpg",
        "___.jpg",
        "日本語の写真.jpg",
        "__init__",
        "-/_./__",
        "photo.with.dots.png",
    ],
)
def test_a_key_never_starts_with_an_underscore_and_has_no_dot(relpath):
    for crop in (-1, 0, 12):
        key = sample_key(relpath, crop)
        assert not key.startswith("_") and "." not in key and "/" not in key, key
        assert key[0].isalnum(), key


def test_ordinary_keys_are_unchanged():
    """Keys of ordinary names are what they were (so their builds stay byte-identical)."""
    assert sample_key("cats/chelsea.png", 0) == "cats_chelsea_png_b6c7abcf_c0000"
    assert sample_key("a b/c (1).jpg", 3).startswith("a_b_c_1_jpg_")


def test_a_long_path_is_one_sample_for_every_reader(tmp_path):
    """The build said 2 samples, verify found 1, training dropped one without a word."""
    import webdataset as wds

    src = tmp_path / "src"
    _write(src / LONG)
    _write(src / "other.png", "coffee")
    result = build(src, tmp_path / "out", BuildConfig(), workers=1, sources_per_shard=2)
    assert result.samples == 2
    keys = _keys(tmp_path / "out")
    assert len(keys) == 2 and not any(k.startswith("_") for k in keys)
    shard = str(next((tmp_path / "out").glob("rawpairs-*.tar")))
    assert len(list(wds.WebDataset(shard, shardshuffle=False))) == 2
    runner = CliRunner()
    verified = runner.invoke(cli, ["inspect", str(tmp_path / "out"), "--verify", "--json"])
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.output)["samples"] == 2


# Item 5: an edit that keeps the size (and the mtime) is seen ---------------------------------


OPTS = ("--workers", "1", "--sources-per-shard", "1")


def _tiff(path: Path, rgb: np.ndarray) -> None:
    """An uncompressed TIFF: another image of the same shape has exactly the same size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), bgr, [cv2.IMWRITE_TIFF_COMPRESSION, 1])


def test_an_edit_that_keeps_size_and_mtime_is_refused_then_rebuilt_with_overwrite(tmp_path):
    import os

    src, out = tmp_path / "src", tmp_path / "out"
    photo = _photo("chelsea")
    _tiff(src / "a.tif", photo)
    _write(src / "b.png", "coffee")
    first = build(src, out, BuildConfig(), workers=1, sources_per_shard=1)
    assert first.samples == 2
    again = build(src, out, BuildConfig(), workers=1, sources_per_shard=1)
    assert again.already_complete
    before = (src / "a.tif").stat()
    _tiff(src / "a.tif", np.ascontiguousarray(photo[::-1]))  # flipped: same size, new content
    os.utime(src / "a.tif", ns=(before.st_atime_ns, before.st_mtime_ns))  # as exiftool -P does
    assert (src / "a.tif").stat().st_size == before.st_size
    old_shard = (out / "rawpairs-000000.tar").read_bytes()
    runner = CliRunner()
    refused = runner.invoke(cli, ["build", "--src", str(src), "--out", str(out), "--quiet", *OPTS])
    assert refused.exit_code == 2, refused.output
    message = refused.output.strip().splitlines()[-1]
    assert "content" in message and "--overwrite" in message, message
    assert (out / "rawpairs-000000.tar").read_bytes() == old_shard  # nothing touched
    rebuilt = runner.invoke(
        cli, ["build", "--src", str(src), "--out", str(out), "--quiet", "--overwrite", *OPTS]
    )
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "already complete" not in rebuilt.output
    assert (out / "rawpairs-000000.tar").read_bytes() != old_shard
    build(src, tmp_path / "fresh", BuildConfig(), workers=1)
    assert (out / "rawpairs-000000.tar").read_bytes() == (
        tmp_path / "fresh" / "rawpairs-000000.tar"
    ).read_bytes()
