"""The Birkhoff codec: closed-form search equals brute force; round trips; edge cases; its settings."""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from compress.birkhoff.codec import (
    CODEBOOK_SIZES, FALLBACK_MAE, MAX_RINGS, SIDE, TARGET_MAE, CodecError, Settings, decode, encode, nearest_theta,
    robust_relative_error, trajectory,
)
from compress.birkhoff.packing import pack_indices, unpack_indices

coordinate = st.floats(-0.3 * SIDE, 1.3 * SIDE, allow_nan=False, width=64)


@settings(max_examples=300, deadline=None)
@given(points=arrays(np.float64, st.tuples(st.integers(1, 64), st.just(2)), elements=coordinate),
       codebook_size=st.sampled_from(CODEBOOK_SIZES))
def test_nearest_theta_equals_brute_force(points, codebook_size):
    lattice = trajectory(np.arange(codebook_size), codebook_size)
    distances = ((points[:, None, :] - lattice[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(nearest_theta(points, codebook_size), distances.argmin(axis=1))


def test_lattice_points_map_to_themselves():
    for codebook_size in CODEBOOK_SIZES:
        thetas = np.arange(codebook_size)
        np.testing.assert_array_equal(nearest_theta(trajectory(thetas, codebook_size), codebook_size), thetas)


@pytest.mark.parametrize("shape, row_pairs", [((64, 96), True), ((33, 17), True), ((1001,), False),
                                              ((3, 5, 7), False)])
def test_round_trip_error_is_small(shape, row_pairs):
    weights = np.random.default_rng(0).normal(0.0, 0.02, shape).astype(np.float32)
    encoded = encode(weights, row_pairs=row_pairs)
    assert encoded is not None and encoded.mae <= 1e-3
    decoded = decode(encoded)
    assert decoded.shape == weights.shape and decoded.dtype == np.float32
    assert abs(np.abs(decoded - weights).mean() - encoded.mae) < 1e-6
    assert encoded.bits <= 13


def test_constant_and_tiny_and_non_contiguous_tensors():
    constant = np.full((4, 6), 0.25, np.float32)
    np.testing.assert_allclose(decode(encode(constant, row_pairs=True)), constant, atol=SIDE / 35)
    tiny = np.array([0.1, -0.2, 0.3], np.float32)
    assert decode(encode(tiny)).shape == (3,)
    strided = np.random.default_rng(1).normal(0, 0.02, (40, 60)).astype(np.float32)[:, ::2]
    assert not strided.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(decode(encode(strided, row_pairs=True)), strided, atol=3e-3)


def test_large_magnitude_tensor_falls_back_to_raw():
    assert encode(np.random.default_rng(2).normal(0, 5.0, (32, 32))) is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    weights = np.zeros((4, 4), np.float32)
    weights[1, 2] = bad
    with pytest.raises(CodecError, match="NaN or infinite"):
        encode(weights)


@settings(max_examples=100, deadline=None)
@given(bits=st.integers(1, 16), data=st.data())
def test_packing_round_trips_msb_first(bits, data):
    indices = np.array(data.draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=50)), np.int64)
    packed = pack_indices(indices, bits)
    assert packed.dtype == np.uint8 and packed.size == (indices.size * bits + 7) // 8
    np.testing.assert_array_equal(unpack_indices(packed, indices.size, bits), indices)


def test_packing_layout_matches_the_reference():
    # 3 indices of 3 bits = 9 bits, left-padded by 7: 0000000 101 011 111
    np.testing.assert_array_equal(pack_indices(np.array([5, 3, 7]), 3), [0b00000001, 0b01011111])


def test_default_settings_are_the_authors_and_round_trip():
    default = Settings()
    assert (default.side, default.codebook_sizes, default.max_rings, default.target_mae, default.fallback_mae,
            default.fill_bits) == (SIDE, CODEBOOK_SIZES, MAX_RINGS, TARGET_MAE, FALLBACK_MAE, None)
    assert Settings.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    custom = Settings(codebook_sizes=[400, 2025], fill_bits=[8, 13], fallback_rel_rmse=0.3, fallback_mae=None)
    assert custom.codebook_sizes == (400, 2025) and Settings.from_dict(custom.to_dict()) == custom
    weights = np.random.default_rng(3).normal(0, 0.02, (48, 64))
    np.testing.assert_array_equal(encode(weights, True).indices,
                                  encode(weights, True, settings=Settings(codebook_sizes=(1225, 1600))).indices)
    with pytest.raises(CodecError, match="unknown codec settings"):
        Settings.from_dict({"sides": 0.1})


@pytest.mark.parametrize("changes, message", [
    ({"codebook_sizes": (1000,)}, "not a square"), ({"codebook_sizes": ()}, "empty"),
    ({"max_rings": 4}, "max_rings"), ({"max_rings": 0}, "max_rings"),
    ({"codebook_sizes": (129 ** 2,)}, "16 bits"), ({"fill_bits": (12, 20)}, "fill_bits"),
    ({"fill_bits": (3, 10)}, "fill_bits"), ({"target_mae": 0.0}, "target_mae"),
    ({"fallback_rel_rmse": -1.0}, "fallback_rel_rmse"), ({"side": math.nan}, "side"),
])
def test_settings_the_decoders_cannot_take_are_refused(changes, message):
    with pytest.raises(CodecError, match=message):
        Settings(**changes)


def test_settings_thread_through_the_search():
    weights = np.random.default_rng(4).normal(0, 0.02, (64, 96))
    assert encode(weights, True, settings=Settings(codebook_sizes=(2025,))).codebook_size == 2025
    assert encode(weights, True, settings=Settings(codebook_sizes=(400, 1225), target_mae=5e-3)).codebook_size == 400
    assert encode(weights, True, settings=Settings(max_rings=1)).rings == 1
    wide = encode(weights, True, settings=Settings(side=0.2))
    assert wide.side == 0.2 and np.array_equal(wide.indices, encode(weights, True, side=0.2).indices)
    large = np.random.default_rng(5).normal(0, 5.0, (32, 32))
    assert encode(large) is None and encode(large, settings=Settings(fallback_mae=None)) is not None


def test_fill_bits_fills_the_index_width_and_beats_the_authors_at_equal_bits():
    plan = Settings(fill_bits=(8, 13)).search_plan(has_outer=True)
    for bits, (group, exhaustive) in zip(range(8, 14), plan):
        assert exhaustive
        for codebook_size, rings in group:
            m = math.isqrt(codebook_size)
            assert m * m == codebook_size and codebook_size * (rings + 1) <= 2**bits < (m + 1) ** 2 * (rings + 1)
    weights = np.random.default_rng(6).normal(0, 0.02, (128, 256))
    authors = encode(weights, True)
    filled = encode(weights, True, settings=Settings(fill_bits=(8, 13), target_mae=7e-4))
    assert filled.bits == authors.bits == 12
    assert filled.mae < 0.85 * authors.mae  # U = 2025 against 1225 in the same 12 bits
    cheap = encode(weights, True, settings=Settings(fill_bits=(8, 13)))  # the authors' target, fewer bits
    assert cheap.bits < authors.bits and cheap.mae <= TARGET_MAE
    np.testing.assert_allclose(decode(cheap), weights, atol=0.02)


def test_robust_relative_error_is_the_plain_one_for_gaussians_and_sees_the_bulk_under_outliers():
    rng = np.random.default_rng(7)
    gaussian = rng.normal(0, 0.02, (128, 512))
    noise = rng.normal(0, 0.001, gaussian.shape)
    plain = np.linalg.norm(noise) / np.linalg.norm(gaussian)
    assert plain <= robust_relative_error(gaussian, gaussian + noise) <= 1.02 * plain
    outliers = gaussian / 2
    outliers.reshape(-1)[rng.choice(outliers.size, 60, replace=False)] = 3.0
    plain = np.linalg.norm(noise) / np.linalg.norm(outliers)
    assert robust_relative_error(outliers, outliers + noise) > 3 * plain
    assert robust_relative_error(np.zeros(20), np.ones(20)) is None
    sparse = np.zeros(100)
    sparse[:3] = 1.0  # median absolute deviation 0: the plain RMS
    assert robust_relative_error(sparse, sparse + 0.01) == pytest.approx(0.1 / np.sqrt(3))
