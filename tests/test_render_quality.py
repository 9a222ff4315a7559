"""Real RAW files render as the camera meant, also on scenes the rules were not chosen on.

Every real file of ``../shared/data/raw/`` (where the rendering rules were chosen) and
``../shared/data/raw_more/`` (other scenes of the same four cameras, used only to check them)
must come within 0.8–1.25× the brightness and 0.6–1.6× the saturation of the camera's embedded
JPEG (Canon) or LibRaw's default render (the others), and align with it (PSNR). The figures are
those of ``benchmarks/render_quality.py``. Skipped with a reason where ``../shared`` is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rawpairs.sample import BuildConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# The README of ../shared/data lists these; listed here so that a missing file is a skip, not a
# silently shorter test.
CHOSEN_ON = (
    "Canon-EOS550D-colorchart.dng",
    "Canon-PowerShot_G2-CRW_0304.CRW",
    "Canon-PowerShot_S40-CRW_0101.CRW",
    "Canon-PowerShot_S40-CRW_0104.CRW",
    "Kodak-DC120-DC120IMG-P003908.KDC",
    "Kodak-DC120-DC120IMG-P003912.KDC",
    "Kodak-DC50-DC50IMG-DC0008L.KDC",
    "Kodak-DC50-DC50IMG-DC0010S.KDC",
)
CHECKED_ON = (
    "Canon-PowerShot_G2-CRW_0305.CRW",
    "Canon-PowerShot_S40-CRW_0105.CRW",
    "Canon-PowerShot_S40-CRW_0112.CRW",
    "Kodak-DC120-DC120IMG-P003909.KDC",
    "Kodak-DC120-DC120IMG-P003913.KDC",
    "Kodak-DC120-DC120IMG-P003915.KDC",
    "Kodak-DC120-DC120IMG-P003916.KDC",
    "Kodak-DC120-DC120IMG-P003917.KDC",
    "Kodak-DC50-DC50IMG-DC0009L.KDC",
    "Kodak-DC50-DC50IMG-DC0012L.KDC",
    "Kodak-DC50-DC50IMG-DC0014L.KDC",
)
FILES = [("raw", name) for name in CHOSEN_ON] + [("raw_more", name) for name in CHECKED_ON]


@pytest.mark.parametrize(("folder", "name"), FILES, ids=[f"{f}/{n}" for f, n in FILES])
def test_real_raw_renders_in_band(folder, name) -> None:
    from benchmarks import render_quality

    path = SHARED / folder / name
    if not path.is_file():
        pytest.skip(f"real RAW data not found at {path} (it lives beside the project in ../shared)")
    quality = render_quality.measure(path, BuildConfig())
    assert quality.reference == ("camera JPEG" if name.endswith(".CRW") else "LibRaw")
    assert quality.in_band, quality
    assert quality.psnr > 19.0, quality


def test_the_benchmark_lists_both_folders() -> None:
    from benchmarks import render_quality

    if not (SHARED / "raw_more").is_dir():
        pytest.skip(f"{SHARED / 'raw_more'} is absent (it lives beside the project in ../shared)")
    listed = {(p.parent.name, p.name) for p in render_quality.real_raw_files()}
    assert {n for _, n in FILES} <= {n for _, n in listed}
    assert {("raw_more", n) for n in CHECKED_ON} <= listed
    assert render_quality.role(SHARED / "raw_more" / CHECKED_ON[0]) == "check"
    assert render_quality.role(SHARED / "raw" / CHOSEN_ON[0]) == "chosen on"
