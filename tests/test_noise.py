"""rawpairs.noise: measured variance = shot·x + read, a true N(0, 1), determinism, darkening."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rawpairs.noise import add_noise, darken, noise_std, standard_normal

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


def test_standard_normal_is_a_standard_normal() -> None:
    z = standard_normal(np.random.default_rng(3), 1_000_000).astype(np.float64)
    assert abs(z.mean()) < 5e-3 and abs(z.var() - 1.0) < 5e-3
    assert abs(np.mean(z**3)) < 2e-2 and abs(np.mean(z**4) - 3.0) < 3e-2
    # Empirical CDF against Φ, through the ziggurat's layers, its wedges and its tail (> 3.44).
    points = np.array([-4.0, -3.44, -2.5, -1.0, -0.3, 0.0, 0.3, 1.0, 2.5, 3.44, 4.0])
    phi = 0.5 * (1.0 + np.array([math.erf(p / math.sqrt(2.0)) for p in points]))
    empirical = np.searchsorted(np.sort(z), points) / z.size
    np.testing.assert_allclose(empirical, phi, atol=2e-3)
    tail = np.mean(np.abs(z) > 3.442619855899)
    assert tail == pytest.approx(math.erfc(3.442619855899 / math.sqrt(2.0)), rel=0.1)


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
    expected = x + noise_std(x, 1e-3, 1e-5) * z1
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


def test_noise_std_values() -> None:
    x = np.array([-0.5, 0.0, 0.25, 1.0], dtype=np.float32)
    np.testing.assert_allclose(noise_std(x, 0.04, 0.01), np.sqrt([0.01, 0.01, 0.02, 0.05]))
    assert noise_std(x, 0.04, 0.01).dtype == np.float32


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
        noise_std(x, 0.0, -1.0)
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
