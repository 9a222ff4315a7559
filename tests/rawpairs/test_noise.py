"""rawpairs.noise: measured variance = shot·x + read, determinism, darkening."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rawpairs.noise import add_noise, darken
from rawpairs.rng import standard_normal

N = 400_000  # relative standard error of a variance estimate: sqrt(2 / N) ≈ 0.2%


@pytest.mark.parametrize("x", [0.0, 0.02, 0.3, 0.9])
@pytest.mark.parametrize(("shot", "read"), [(1e-2, 1e-4), (1e-4, 3e-8), (0.0, 1e-3), (5e-3, 0.0)])
def test_flat_patch_variance_matches_model(x: float, shot: float, read: float) -> None:
    expected = shot * x + read
    flat = np.full((400, N // 400), x, dtype=np.float32)
    noisy = add_noise(flat, shot, read, np.random.default_rng(1))
    assert noisy.dtype == np.float32 and noisy.shape == flat.shape
    if expected == 0:  # no signal, no read noise: nothing to add
        np.testing.assert_array_equal(noisy, flat)
        return
    assert noisy.var(dtype=np.float64) == pytest.approx(expected, rel=0.05)
    assert abs(noisy.mean(dtype=np.float64) - x) < 5 * math.sqrt(expected / N)


def test_same_seed_same_noise_different_seed_different() -> None:
    x = np.linspace(0, 1, 10_000, dtype=np.float32).reshape(100, 100)
    a = add_noise(x, 1e-3, 1e-5, np.random.default_rng(5))
    b = add_noise(x, 1e-3, 1e-5, np.random.default_rng(5))
    c = add_noise(x, 1e-3, 1e-5, np.random.default_rng(6))
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)
    z1 = standard_normal(np.random.default_rng(5), (100, 100))
    np.testing.assert_array_equal(z1, standard_normal(np.random.default_rng(5), (100, 100)))
    # add_noise is x + std · z with z the same stream standard_normal draws
    std = np.sqrt(np.float32(1e-3) * np.maximum(x, np.float32(0)) + np.float32(1e-5))
    expected = x + std * z1
    np.testing.assert_array_equal(a, expected)


def test_rng_advances_between_calls() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros(1000, dtype=np.float32)
    assert not np.array_equal(add_noise(x, 0, 1e-4, rng), add_noise(x, 0, 1e-4, rng))


def test_out_receives_result_in_place() -> None:
    x = np.full((8, 8), 0.5, dtype=np.float32)
    expected = add_noise(x, 1e-2, 1e-4, np.random.default_rng(2))
    out = x.copy()
    assert add_noise(out, 1e-2, 1e-4, np.random.default_rng(2), out=out) is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("factor", [2.0, 8.0, 50.0])
def test_darken_has_the_noise_of_the_dimmer_capture(factor: float) -> None:
    shot, read, x = 4e-3, 2e-5, 0.6
    capture = add_noise(np.full(N, x, np.float32), shot, read, np.random.default_rng(0))
    dark = darken(capture, factor, shot, read, np.random.default_rng(1))
    assert dark.dtype == np.float32
    assert dark.mean(dtype=np.float64) == pytest.approx(x / factor, rel=0.01)
    # A real capture with factor× less light at the same gain:
    assert dark.var(dtype=np.float64) == pytest.approx(shot * x / factor + read, rel=0.05)


def test_darken_by_one_changes_nothing() -> None:
    x = np.random.default_rng(0).random((16, 16), dtype=np.float32)
    np.testing.assert_array_equal(darken(x, 1.0, 1e-2, 1e-4, np.random.default_rng(1)), x)


def test_errors() -> None:
    x = np.zeros((4, 4), dtype=np.float32)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="noise levels"):
        add_noise(x, -1e-3, 0.0, rng)
    with pytest.raises(ValueError, match="noise levels"):
        add_noise(x, 1e-3, np.nan, rng)
    with pytest.raises(ValueError, match="noise levels"):
        darken(x, 2.0, 0.0, -1.0, rng)
    with pytest.raises(ValueError, match="out must be"):
        add_noise(x, 1e-3, 0.0, rng, out=np.zeros((4, 4), dtype=np.float64))
    with pytest.raises(ValueError, match="out must be"):
        add_noise(x, 1e-3, 0.0, rng, out=np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="Generator"):
        add_noise(x, 1e-3, 0.0, np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor"):
        darken(x, 0.5, 1e-3, 0.0, rng)
    with pytest.raises(ValueError, match="factor"):
        darken(x, np.inf, 1e-3, 0.0, rng)
