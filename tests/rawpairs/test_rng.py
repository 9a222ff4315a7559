"""rawpairs.rng: the per-sample generator (pinned seeding) and a true N(0, 1) compiled stream."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from rawpairs.rng import key_hash, sample_rng, standard_normal, stream_key


def test_sample_rng_is_seeded_by_its_parts_in_order() -> None:
    digest = int.from_bytes(hashlib.sha256(b"a/b_c0001").digest()[:8], "little")
    assert key_hash("a/b_c0001") == digest
    # The builder's generator (seed, key): pinned, since it decides every shard's bytes.
    expected = np.random.default_rng([7, digest]).integers(0, 2**63, 8)
    np.testing.assert_array_equal(sample_rng(7, "a/b_c0001").integers(0, 2**63, 8), expected)
    draws = {
        parts: tuple(sample_rng(*parts).integers(0, 2**63, 4))
        for parts in [(7, "k"), (7, "k2"), (8, "k"), ("k", 7), (7, 0, "k"), (7, 1, "k")]
    }
    assert len(set(draws.values())) == len(draws)  # every part, and its place, matters
    assert tuple(sample_rng(7, "k").integers(0, 2**63, 4)) == draws[(7, "k")]


@pytest.mark.parametrize("bad", [(), (-1, "k"), (True, "k"), (1.5, "k"), (None,), (b"k",)])
def test_sample_rng_refuses_what_cannot_seed(bad: tuple) -> None:
    with pytest.raises(ValueError, match="sample_rng"):
        sample_rng(*bad)


def test_stream_key_needs_a_generator() -> None:
    with pytest.raises(ValueError, match="Generator"):
        stream_key(np.random.RandomState(0))  # type: ignore[arg-type]
    assert stream_key(np.random.default_rng(1)) == stream_key(np.random.default_rng(1))


def test_standard_normal_is_deterministic() -> None:
    a = standard_normal(np.random.default_rng(5), (10, 10))
    assert a.dtype == np.float32 and a.shape == (10, 10)
    np.testing.assert_array_equal(a, standard_normal(np.random.default_rng(5), (10, 10)))
    assert not np.array_equal(a, standard_normal(np.random.default_rng(6), (10, 10)))


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
