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

from rawpairs.config import BuildConfig

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
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


# One file of each square-pixel camera model (LibRaw stretches the DC120's non-square pixels, so
# --render libraw refuses it): the two of tests/data/raw are in every clone.
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "raw"
BOTH_RENDERS = (
    SHIPPED / "Canon-PowerShot_S40-CRW_0104.CRW",
    SHIPPED / "Kodak-DC50-DC50IMG-DC0010S.KDC",
    SHARED / "raw" / "Canon-EOS550D-colorchart.dng",
    SHARED / "raw" / "Canon-PowerShot_G2-CRW_0304.CRW",
)


@pytest.mark.parametrize("path", BOTH_RENDERS, ids=[p.name for p in BOTH_RENDERS])
def test_libraw_render_follows_the_same_exposure_policy(tmp_path, path) -> None:
    """``--render libraw`` applies (and records) the gain of ``--exposure auto`` as the default
    render does, so the two RGBs of one file agree in brightness (before: 0.68–0.85×)."""
    from rawpairs.sample import Source, make_samples

    if not path.is_file():
        pytest.skip(f"real RAW data not found at {path} (it lives beside the project in ../shared)")
    source = Source(str(path), path.name, "raw")
    ours = next(make_samples(source, BuildConfig()))
    libraw = next(make_samples(source, BuildConfig(render="libraw")))
    assert libraw.meta.camera == ours.meta.camera
    assert libraw.meta.camera.provenance["digital_gain"] == "auto:p99"
    assert libraw.meta.camera.digital_gain >= 1.0
    ratio = libraw.rgb.mean() / ours.rgb.mean()
    assert 0.9 <= ratio <= 1.1, ratio
    unexposed = next(make_samples(source, BuildConfig(render="libraw", exposure="none")))
    assert unexposed.meta.camera.digital_gain == 1.0
    assert "digital_gain" not in unexposed.meta.camera.provenance
    if ours.meta.camera.digital_gain > 1.05:  # the gain is what brightens the LibRaw render
        assert unexposed.rgb.mean() < libraw.rgb.mean()
