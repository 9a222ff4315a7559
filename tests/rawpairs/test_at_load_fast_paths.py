"""The fast paths of the at-load build (issue 18's samples/s target) give what the general code
gives: tar headers, the JPEG truncation check, camera validation and libjpeg's stderr capture."""

from __future__ import annotations

import os
import tarfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawpairs.camera import Camera
from rawpairs.decoder_output import captured_stderr
from rawpairs.photos import _jpeg_truncated
from rawpairs.priors import DEFAULT_PRIORS, sample_camera
from rawpairs.rng import sample_rng
from rawpairs.shards import tar_member


def _tarfile_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = size, 0, 0o444, "", ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@given(
    st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=130),
    st.one_of(st.integers(0, 2**20), st.sampled_from([8**11 - 1, 8**11, 2**40])),
)
def test_tar_member_is_tarfiles_header(name: str, size: int) -> None:
    assert tar_member(name, size) == _tarfile_header(name, size)


@pytest.mark.parametrize("name", ["k_0123abcd_c0000.json", "x" * 100, "x" * 101, "é.jpg"])
def test_tar_member_reads_back(tmp_path, name: str) -> None:
    data = b"abc"
    path = tmp_path / "t.tar"
    path.write_bytes(tar_member(name, len(data)) + data + b"\0" * (509 + 1024))
    with tarfile.open(path) as tar:
        (member,) = tar.getmembers()
        assert (member.name, member.size, member.mode, member.mtime) == (name, 3, 0o444, 0)
        assert tar.extractfile(member).read() == data  # type: ignore[union-attr]


def _truncated_by_definition(data: bytes) -> bool:
    """No end-of-image marker after the last start-of-scan (or no start-of-scan at all)."""
    sos = data.rfind(b"\xff\xda")
    return sos < 0 or data.find(b"\xff\xd9", sos) < 0


@given(st.lists(st.sampled_from([b"\xff", b"\xda", b"\xd9", b"\x00", b"\xd8"]), max_size=16))
def test_jpeg_truncated_follows_its_definition(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert _jpeg_truncated(data) == _truncated_by_definition(data)


def test_camera_from_python_floats_equals_camera_from_arrays() -> None:
    for i in range(50):
        camera = sample_camera(sample_rng(0, f"k{i}"), DEFAULT_PRIORS)
        again = Camera(
            cfa=camera.cfa,
            black_level=np.array(camera.black_level),
            white_level=np.float32(camera.white_level),
            bit_depth=camera.bit_depth,
            wb_gains=list(camera.wb_gains),
            xyz_to_cam=np.array(camera.xyz_to_cam),
            digital_gain=np.array([camera.digital_gain]),
            noise_shot=camera.noise_shot,
            noise_read=camera.noise_read,
        )
        assert again == camera
        assert again.to_dict() == {**camera.to_dict(), "provenance": {}}
        rgb_to_cam = camera.rgb_to_cam
        rgb_to_cam[0, 0] = 99.0  # a copy: the camera's own stays as it was
        assert np.array_equal(camera.rgb_to_cam, again.rgb_to_cam)
        assert np.array_equal(camera.cam_to_srgb, np.linalg.inv(again.rgb_to_cam))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_camera_refuses_non_finite_python_floats(value: float) -> None:
    good = sample_camera(sample_rng(0, "k"), DEFAULT_PRIORS)
    with pytest.raises(ValueError, match="wb_gains must be finite"):
        good.replace(wb_gains=(value, 1.0, 1.0))
    with pytest.raises(ValueError, match="digital_gain must be finite"):
        good.replace(digital_gain=value)


def test_camera_refuses_what_np_linalg_cond_refuses() -> None:
    good = sample_camera(sample_rng(0, "k"), DEFAULT_PRIORS)
    singular = ((1.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="not invertible"):
        good.replace(xyz_to_cam=singular)


def test_stderr_captures_are_separate_and_nest() -> None:
    with captured_stderr() as first:
        os.write(2, b"one\n")
    with captured_stderr() as outer:
        os.write(2, b"outer before\n")
        with captured_stderr() as inner:
            os.write(2, b"inner\n")
        os.write(2, b"outer after\n")
    with captured_stderr() as empty:
        pass
    assert first == ["one"]
    assert inner == ["inner"]
    assert outer == ["outer before", "outer after"]
    assert empty == []
