"""Properties of rawpairs.tone: inverse pairs in float32, the exact uint8 table, golden values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rawpairs.choices import Gamma, Tone
from rawpairs.tone import (
    decode_gamma,
    encode_gamma,
    inverse_tone,
    linear_lut,
    tone,
)


def unit_floats(lo: float = 0.0, hi: float = 1.0):
    """float32 arrays with values in [lo, hi] (rounded to float32), ends included."""
    return arrays(
        np.float32,
        st.integers(1, 64),
        elements=st.floats(float(np.float32(lo)), float(np.float32(hi)), width=32),
    )


@settings(max_examples=60, deadline=None)
@given(unit_floats(), st.sampled_from(Gamma.values()))
def test_gamma_inverse_pairs(x, gamma) -> None:
    encoded = encode_gamma(x, gamma)
    assert encoded.dtype == np.float32
    np.testing.assert_allclose(decode_gamma(encoded, gamma), x, rtol=0, atol=1e-5)
    np.testing.assert_allclose(encode_gamma(decode_gamma(x, gamma), gamma), x, rtol=0, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(unit_floats(), st.sampled_from(list(Tone)))
def test_tone_of_inverse_tone(y, curve) -> None:
    out = tone(inverse_tone(y, curve), curve)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, y, rtol=0, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(unit_floats(0.001, 0.99), st.sampled_from(list(Tone)))
def test_inverse_tone_of_tone(x, curve) -> None:
    """Within 1e-5 away from the ends. Near 0 and 1 smoothstep is flat (slope 6x(1 − x)), so the
    float32 rounding of its output costs up to ~1e-4 in x there (see test below)."""
    np.testing.assert_allclose(inverse_tone(tone(x, curve), curve), x, rtol=0, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(unit_floats())
def test_inverse_tone_of_tone_is_exact_in_the_output_domain(x) -> None:
    y = tone(x)
    np.testing.assert_allclose(tone(inverse_tone(y)), y, rtol=0, atol=1e-6)


def test_golden_values() -> None:
    x = np.array([0.0, 0.0031308, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(
        encode_gamma(x, "srgb"), [0.0, 0.04044994, 0.53709873, 0.73535698, 1.0], atol=1e-7
    )
    np.testing.assert_allclose(encode_gamma(x, "2.2"), x ** (1 / 2.2), atol=1e-12)
    np.testing.assert_allclose(tone(x), [0.0, 2.93443503e-5, 0.15625, 0.5, 1.0], rtol=1e-8)
    # out-of-range inputs are clipped first
    np.testing.assert_array_equal(tone(np.array([-0.5, 1.5])), [0.0, 1.0])
    np.testing.assert_allclose(encode_gamma(np.array([-0.5, 1.5])), [0.0, 1.0], atol=1e-15)


@pytest.mark.parametrize("gamma", list(Gamma))
def test_display_smoothstep_is_smoothstep_of_the_encoded_value(gamma) -> None:
    """Brooks et al.'s order: gamma first, then smoothstep on display values (their unprocess
    inverts exactly this); as a linear → linear stage, ``gamma(tone(x)) = smoothstep(gamma(x))``."""
    x = np.linspace(0, 1, 1001)
    v = encode_gamma(x, gamma)
    want = 3 * v**2 - 2 * v**3
    got = encode_gamma(tone(x, "display_smoothstep", gamma), gamma)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        inverse_tone(tone(x, "display_smoothstep", gamma), "display_smoothstep", gamma),
        x,
        rtol=0,
        atol=1e-6,
    )
    assert tone(np.float32([0.5]), "display_smoothstep", gamma).dtype == np.float32


def test_curves_are_increasing() -> None:
    x = np.linspace(0, 1, 100_001)
    for gamma in Gamma.values():
        assert np.all(np.diff(encode_gamma(x, gamma)) > 0)
    assert np.all(np.diff(tone(x)) > 0)
    assert np.all(np.diff(tone(x, "display_smoothstep")) > 0)


@pytest.mark.parametrize("gamma", list(Gamma))
@pytest.mark.parametrize("curve", Tone.values())
def test_linear_lut_equals_the_function(gamma, curve) -> None:
    lut = linear_lut(gamma, curve)
    assert lut.shape == (256,) and lut.dtype == np.float32
    codes = np.arange(256, dtype=np.float32) / 255
    np.testing.assert_allclose(
        lut, inverse_tone(decode_gamma(codes, gamma), curve, gamma), atol=2e-6
    )
    assert abs(lut[0]) < 1e-12 and lut[255] == 1.0  # smoothstep's closed form gives 5.6e-17
    # forward again and round half up: every code comes back
    forward = encode_gamma(tone(lut.astype(np.float64), curve, gamma), gamma)
    np.testing.assert_array_equal(np.floor(forward * 255 + 0.5), np.arange(256))
    with pytest.raises(ValueError, match="read-only"):
        lut[0] = 1.0


@pytest.mark.parametrize(
    "call",
    [encode_gamma, decode_gamma, tone, inverse_tone],
)
def test_integer_input_is_rejected(call) -> None:
    with pytest.raises(ValueError, match="expects a float array"):
        call(np.array([0, 255], np.uint8))


def test_unknown_names() -> None:
    x = np.zeros(3, np.float32)
    for call in (encode_gamma, decode_gamma):
        with pytest.raises(ValueError, match="unknown gamma 'rec709'"):
            call(x, "rec709")
    for call in (tone, inverse_tone):
        with pytest.raises(ValueError, match="unknown tone curve 'filmic'"):
            call(x, "filmic")
    with pytest.raises(ValueError, match="unknown gamma"):
        linear_lut("rec709")
    with pytest.raises(ValueError, match="unknown tone curve"):
        linear_lut("srgb", "filmic")
