"""The plain reference implementation of the HyperLinear codes (numpy only, no torch).

What every other decoder must equal bit for bit: the torch module
(compress/birkhoff/hyper_linear.py), the ONNX function bodies (export/hyper_linear.py), the
TensorRT plugin's host table and the CUDA kernel. The layout is spec.py's; docs/formats.md
has the meaning.

The decode goes through a table: index i = theta + U * ring always decodes to the same
unscaled pair, so the U * (K + 1) pairs (51 KB at U = 1600, K = 3) are computed once and a
weight costs one gather and the row-scale multiply. Each entry is the float32 sequence

    x = float(theta mod m^2) * L / m^2,   y = float(theta mod m) * L / m
    pair = (center[0] + (x - L/2) * gains[ring], center[1] + (y - L/2) * gains[ring])

one IEEE operation at a time (numpy rounds each to float32, and never contracts into FMAs).
"""

from __future__ import annotations

import numpy as np

from . import spec

_F32 = np.float32


def word_count(count: int, bits: int) -> int:
    return -(-count * bits // spec.WORD_BITS)


def check_bits(bits: int) -> None:
    if not 1 <= bits <= spec.MAX_INDEX_BITS:
        raise ValueError(f"index_bits must be in 1..{spec.MAX_INDEX_BITS}, got {bits}")


def pack(indices: np.ndarray, bits: int) -> np.ndarray:
    """int indices [n] (each < 2**bits) -> int32 words [ceil(n * bits / 32)], spec.py's stream."""
    check_bits(bits)
    indices = np.asarray(indices, np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= 1 << bits):
        raise ValueError(f"indices must lie in [0, 2**{bits})")
    # Bit k of the stream is bit k mod 8 of byte k // 8 ("little" order); on a little-endian
    # host, four such bytes are one uint32 word with the same bits in the same places.
    stream = ((indices[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    words = word_count(indices.size, bits)
    packed = np.zeros(words * 4, np.uint8)
    packed[: -(-stream.size // 8)] = np.packbits(stream, bitorder="little")
    return packed.view("<u4").astype(np.uint32).view(np.int32)


def unpack(words: np.ndarray, count: int, bits: int) -> np.ndarray:
    """The inverse of `pack`: int64 indices [count]."""
    check_bits(bits)
    words = np.asarray(words).reshape(-1)
    if words.dtype != np.int32:
        raise ValueError(f"codes must be int32 words, got {words.dtype}")
    if words.size != word_count(count, bits):
        raise ValueError(f"codes have {words.size} words; {count} indices of {bits} bits need "
                         f"{word_count(count, bits)}")
    unsigned = words.view(np.uint32).astype(np.int64)
    offset = np.arange(count, dtype=np.int64) * bits
    word, shift = offset >> 5, offset & 31
    low = unsigned[word] >> shift
    # The next word only matters when the index straddles; the last word never needs one.
    high = unsigned[np.minimum(word + 1, unsigned.size - 1)] << (32 - shift)
    return (low | high) & ((1 << bits) - 1)


def pair_table(codebook_size: int, lattice_side: int, side: float, center, gains) -> np.ndarray:
    """float32 [U * (K + 1), 2]: the unscaled pair of every index."""
    gains = np.asarray(gains, _F32)
    center = np.asarray(center, _F32)
    index = np.arange(codebook_size * gains.size, dtype=np.int64)
    ring, theta = index // codebook_size, index % codebook_size
    area = lattice_side * lattice_side
    side32 = _F32(side)
    x = (theta % area).astype(_F32) * side32 / _F32(area)
    y = (theta % lattice_side).astype(_F32) * side32 / _F32(lattice_side)
    half = side32 * _F32(0.5)
    gain = gains[ring]
    w0 = center[0] + (x - half) * gain
    w1 = center[1] + (y - half) * gain
    return np.stack([w0, w1], axis=-1)


def _pairs(words, count: int, bits: int, table: np.ndarray) -> np.ndarray:
    index = unpack(words, count, bits)
    if index.size and index.max() >= len(table):
        raise ValueError(f"a code names pair {int(index.max())} of a {len(table)}-pair table: "
                         "the codes are damaged; re-export the model")
    return table[index]  # [count, 2]


def decode_linear(words, row_scale, *, in_features: int, out_features: int, codebook_size: int,
                  lattice_side: int, index_bits: int, side: float, center, gains) -> np.ndarray:
    """float32 W [out, in] of a HyperLinear node (its attributes as keyword arguments)."""
    pairs = (in_features + 1) // 2
    table = pair_table(codebook_size, lattice_side, side, center, gains)
    weight = _pairs(words, out_features * pairs, index_bits, table).reshape(out_features, 2 * pairs)
    return weight[:, :in_features] * np.asarray(row_scale, _F32).reshape(out_features, 1)


def decode_tensor(words, scale, *, shape, codebook_size: int, lattice_side: int, index_bits: int,
                  side: float, center, gains) -> np.ndarray:
    """float32 tensor of `shape` from a HyperTensor node (pairs of the flattened tensor)."""
    size = int(np.prod(shape, dtype=np.int64))
    table = pair_table(codebook_size, lattice_side, side, center, gains)
    values = _pairs(words, (size + 1) // 2, index_bits, table).reshape(-1)[:size]
    return (values * np.asarray(scale, _F32).reshape(())).reshape(tuple(shape))
