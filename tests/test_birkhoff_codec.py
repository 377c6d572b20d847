"""The Birkhoff codec: closed-form search equals brute force; round trips; edge cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from compress.birkhoff.codec import (
    CODEBOOK_SIZES, SIDE, CodecError, decode, encode, nearest_theta, trajectory,
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
