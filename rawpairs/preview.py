"""The contact sheet of a build (``rawpairs inspect --preview``): per sample, the stored RGB,
the forward ISP's rendering of the mosaic from the sample's own metadata, and the mosaic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from rawpairs.buildfolder import InspectError, load_build, regular_file
from rawpairs.choices import Demosaic, Gamma
from rawpairs.isp import process
from rawpairs.messages import one_line
from rawpairs.sample import sample_raw
from rawpairs.schema import DecodedSample, decode_sample
from rawpairs.tarwalk import read_shard
from rawpairs.tone import DEFAULT_TONE

__all__ = ["check_preview_path", "write_preview"]

_FONT, _FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.4


def _fit_text(text: str, width: int) -> str:
    """``text``, cut and ended with '..' where it is wider than ``width`` pixels in the label
    font (a label never runs into the next panel)."""

    def fits(t: str) -> bool:
        return cv2.getTextSize(t, _FONT, _FONT_SCALE, 3)[0][0] <= width

    if fits(text):
        return text
    while text and not fits(text + ".."):
        text = text[:-1]
    return text + ".."


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    text = _fit_text(text, out.shape[1] - 8)
    cv2.putText(out, text, (4, 14), _FONT, _FONT_SCALE, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), _FONT, _FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _fit(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = size / max(h, w)
    resized = cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
    )
    canvas = np.full((size, size, 3), 32, np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return canvas


def _preview_row(sample: DecodedSample, tile: int) -> np.ndarray:
    camera, render = sample.meta.camera, sample.meta.render
    raw = sample_raw(sample)
    h, w = raw.shape
    # The ISP needs an even mosaic of at least 4×4; a thin sample (a 2×5000 crop of a 3×5000
    # photo, which verify and the loader accept) is padded at the bottom/right (CFA phase kept).
    pad_h, pad_w = max(4, h + h % 2) - h, max(4, w + w % 2) - w
    mosaic_in = np.pad(raw, ((0, pad_h), (0, pad_w)), mode="reflect" if min(h, w) > 2 else "edge")
    rendered = process(  # the sample's own choices; a LibRaw sample has none: our defaults
        mosaic_in,
        camera,
        demosaic=render.demosaic or Demosaic.MALVAR,
        tone=render.tone or DEFAULT_TONE,
        gamma=render.gamma or Gamma.SRGB,
    )[:h, :w]
    black = min(camera.black_level)
    scaled = np.clip((raw.astype(np.float32) - black) / (camera.white_level - black), 0, 1)
    mosaic = np.repeat((np.sqrt(scaled) * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    key = sample.key
    short = key if len(key) <= 40 else "…" + key[-39:]
    kind = sample.meta.source.kind.value + (", at load" if sample.raw is None else "")
    return np.hstack(
        [
            _label(_fit(sample.rgb, tile), f"RGB {short}"),
            _label(_fit(rendered, tile), f"ISP({camera.cfa.value}) of RAW"),
            _label(_fit(mosaic, tile), f"RAW mosaic (sqrt) {kind}"),
        ]
    )


def check_preview_path(out: str | Path) -> None:
    """:class:`InspectError` (one line) unless ``out`` can be written as an image: a name with
    an extension OpenCV writes (``.png``, ``.jpg``, …), not a folder, under no file."""
    out = Path(out)
    if out.is_dir():
        raise InspectError(f"--preview {out}: a folder, not an image file name")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise InspectError(f"--preview {out}: {parent} is a file, not a folder")
    if not out.suffix:
        raise InspectError(f"--preview {out}: no extension; name a .png or .jpg file")
    if not cv2.haveImageWriter(str(out)):
        raise InspectError(f"--preview {out}: cannot write {out.suffix} images; use .png or .jpg")


def write_preview(folder: str | Path, out: str | Path, n: int = 6, tile: int = 256) -> Path:
    """A contact sheet image (``out``: .png, .jpg, …): per sample, the stored RGB, the mosaic
    rendered by the forward ISP from the sample's own metadata, and the raw mosaic (linearly
    scaled), side by side.

    Raises :class:`InspectError` (one line) for a folder that is not a readable build, a damaged
    shard or sample, or an image that cannot be written.
    """
    folder, out = Path(folder), Path(out)
    check_preview_path(out)
    b = load_build(folder)
    if not b.rows:
        raise InspectError(f"{folder}: no samples to preview")
    picks = np.unique(np.linspace(0, len(b.rows) - 1, min(n, len(b.rows))).round().astype(int))
    wanted = {b.rows[i]["key"] for i in picks}  # evenly spread over the build
    rows_img = []
    for entry in b.index:
        path = folder / entry.name
        if not regular_file(path):
            raise InspectError(f"{path}: missing or not a regular file")
        try:
            for tar_sample in read_shard(path):
                if tar_sample.key in wanted and tar_sample.members is not None:
                    sample = decode_sample(tar_sample.members, str(path), tar_sample.key)
                    try:
                        rows_img.append(_preview_row(sample, tile))
                    except (ValueError, cv2.error) as err:  # the ISP refusing the metadata
                        raise InspectError(
                            one_line(f"{path}: sample {tar_sample.key!r}: cannot draw: {err}")
                        ) from err
        except ValueError as err:  # CorruptInputError, or the ISP refusing the metadata
            raise InspectError(one_line(err)) from err
    if not rows_img:
        raise InspectError(f"{folder}: no samples to preview")
    sheet = np.vstack(rows_img)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        written = cv2.imwrite(str(out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    except (OSError, cv2.error) as err:
        raise InspectError(one_line(f"{out}: cannot write the preview image: {err}")) from err
    if not written:
        raise InspectError(f"{out}: cannot write the preview image")
    return out
