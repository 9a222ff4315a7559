"""How real RAW pairs look: our render of each real RAW file against the camera's own JPEG.

For every real RAW file (the ones shipped in ``tests/data/raw`` and, when present, those in
``../shared/data/raw``, where the rendering rules were chosen, and ``../shared/data/raw_more``,
other scenes of the same cameras that only check them) the RGB half of the pair ``rawpairs
build`` makes (default options, or the tone curve / exposure named) is compared with a
reference: the JPEG the camera embedded in the RAW file (``rawpy`` ``extract_thumb()``) where
there is one, else LibRaw's default render (``postprocess(use_camera_wb=True)``: AHD, as-shot
white balance, auto-brightness, BT.709 gamma). Both are upright (the file's orientation applied
to ours). Figures:

- brightness ratio: mean of our 8-bit codes ÷ the reference's;
- saturation ratio: mean HSV saturation ``(max − min) / max`` over pixels with ``max ≥ 10``, ours
  ÷ the reference's;
- PSNR (dB) after alignment: ours resized to the reference's size (area), then aligned to it by
  an affine map (OpenCV's ECC), over the reference less an 8-pixel border.

Run: ``python -m benchmarks.render_quality`` (prints the Markdown table of docs/isp.md, "Render
quality"); ``--tone`` / ``--exposure`` to measure other settings. The acceptance band of the
project's issue is 0.8–1.25× brightness and 0.6–1.6× saturation.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import cv2
import numpy as np
import rawpy

from rawpairs.config import BuildConfig
from rawpairs.sample import Source, make_samples
from rawpairs.sources import RAW_EXTENSIONS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# raw/ is where the rules were chosen; raw_more/ (other scenes, same cameras) only checks them.
FOLDERS = (ROOT / "tests" / "data" / "raw", SHARED / "raw", SHARED / "raw_more")
BRIGHTNESS_BAND = (0.8, 1.25)
SATURATION_BAND = (0.6, 1.6)
_MARGIN = 8


@dataclass(frozen=True)
class Quality:
    """Our render against a reference: which reference, and the three figures."""

    reference: str  # "camera JPEG" | "LibRaw"
    brightness: float
    saturation: float
    psnr: float

    @property
    def in_band(self) -> bool:
        return (
            BRIGHTNESS_BAND[0] <= self.brightness <= BRIGHTNESS_BAND[1]
            and SATURATION_BAND[0] <= self.saturation <= SATURATION_BAND[1]
        )


def saturation(rgb: np.ndarray) -> float:
    """Mean HSV saturation ``(max − min) / max`` of a uint8 RGB image, over pixels with max ≥ 10."""
    x = rgb.astype(np.float64)
    top, bottom = x.max(axis=-1), x.min(axis=-1)
    lit = top >= 10
    return float(((top - bottom)[lit] / top[lit]).mean())


def aligned_psnr(ours: np.ndarray, reference: np.ndarray, margin: int = _MARGIN) -> float:
    """PSNR (dB, peak 255) of ``ours`` resized to ``reference`` and aligned to it.

    Alignment: an affine map fitted by OpenCV's ECC on the grey levels (a camera's JPEG is often
    a slightly cropped, rescaled view of the sensor: ~1.7% here); identity if ECC does not
    converge. The PSNR is over the reference less a ``margin``-pixel border.
    """
    h, w = reference.shape[:2]
    small = cv2.resize(ours, (w, h), interpolation=cv2.INTER_AREA)
    grey = [
        cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255 for x in (small, reference)
    ]
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)
    try:
        _, warp = cv2.findTransformECC(grey[1], grey[0], warp, cv2.MOTION_AFFINE, criteria, None, 5)
    except cv2.error:
        warp = np.eye(2, 3, dtype=np.float32)
    aligned = cv2.warpAffine(small, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    inner = (slice(margin, h - margin), slice(margin, w - margin))
    mse = float(np.mean((aligned[inner].astype(np.float64) - reference[inner]) ** 2))
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def compare(ours: np.ndarray, reference: np.ndarray, kind: str) -> Quality:
    """The three figures of ``ours`` (uint8 RGB) against ``reference`` (uint8 RGB, any size)."""
    return Quality(
        reference=kind,
        brightness=float(ours.mean() / reference.mean()),
        saturation=saturation(ours) / saturation(reference),
        psnr=aligned_psnr(ours, reference),
    )


_FLIPS = {3: cv2.ROTATE_180, 5: cv2.ROTATE_90_COUNTERCLOCKWISE, 6: cv2.ROTATE_90_CLOCKWISE}


def reference_of(path: Path) -> tuple[str, np.ndarray, int]:
    """(kind, upright uint8 RGB reference, LibRaw's ``sizes.flip``) of a RAW file."""
    with rawpy.imread(str(path)) as raw:
        flip = int(raw.sizes.flip)
        try:
            thumb = raw.extract_thumb()
        except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
            thumb = None
        if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
            bgr = cv2.imdecode(np.frombuffer(thumb.data, np.uint8), cv2.IMREAD_COLOR)
            return "camera JPEG", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), flip
    with rawpy.imread(str(path)) as raw:
        return "LibRaw", raw.postprocess(use_camera_wb=True, output_bps=8), flip


def our_render(path: Path, config: BuildConfig) -> np.ndarray:
    """The RGB half of the pair ``rawpairs build`` makes from ``path`` (whole image)."""
    (sample,) = make_samples(Source(str(path), path.name, "raw"), config)
    return sample.rgb


def measure(path: Path, config: BuildConfig) -> Quality:
    kind, reference, flip = reference_of(path)
    ours = our_render(path, config)
    if flip in _FLIPS:
        ours = cv2.rotate(ours, _FLIPS[flip])
    return compare(ours, reference, kind)


def real_raw_files() -> list[Path]:
    """Real RAW files, shipped ones first, each name once."""
    found: dict[str, Path] = {}
    for folder in FOLDERS:
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in RAW_EXTENSIONS:
                    found.setdefault(path.name, path)
    return list(found.values())


def role(path: Path) -> str:
    """Where a file stands: ``chosen on`` (tests/data/raw and raw/) or ``check`` (raw_more/)."""
    return "check" if path.parent.name == "raw_more" else "chosen on"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tone", action="append", help="tone curve(s) (default: the default)")
    parser.add_argument("--exposure", default="auto", choices=["auto", "none"])
    args = parser.parse_args()
    tones = args.tone or [BuildConfig().tone]
    print("| file | rules | reference | tone | brightness | saturation | PSNR (dB) | in band |")
    print("|---|---|---|---|---|---|---|---|")
    for path in real_raw_files():
        for tone in tones:
            q = measure(path, BuildConfig(tone=tone, exposure=args.exposure))
            print(
                f"| {path.name} | {role(path)} | {q.reference} | {tone} | {q.brightness:.2f}× | "
                f"{q.saturation:.2f}× | {q.psnr:.1f} | {'yes' if q.in_band else 'no'} |"
            )


if __name__ == "__main__":
    main()
