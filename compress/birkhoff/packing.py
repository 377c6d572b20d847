"""Fixed-width index packing, MSB first, as the reference stores Birkhoff codes.

n indices of b bits form one bit string of n*b bits, left-padded with zeros to whole
bytes. numpy's packbits/unpackbits do the byte work.
"""

from __future__ import annotations

import numpy as np


def padding_bits(count: int, bits: int) -> int:
    return (-count * bits) % 8


def pack_indices(indices: np.ndarray, bits: int) -> np.ndarray:
    """int indices [n] (each < 2**bits) -> uint8 stream of ceil(n*bits/8) bytes."""
    indices = np.asarray(indices, np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= 1 << bits):
        raise ValueError(f"indices must lie in [0, 2**{bits})")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    stream = ((indices[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)
    stream = np.concatenate([np.zeros(padding_bits(indices.size, bits), np.uint8), stream])
    return np.packbits(stream)


def unpack_indices(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    """The inverse of pack_indices: int64 [count]."""
    packed = np.asarray(packed, np.uint8).reshape(-1)
    expected = (count * bits + 7) // 8
    if packed.size != expected:
        raise ValueError(f"packed stream has {packed.size} bytes, {count} indices of {bits} bits need {expected}")
    stream = np.unpackbits(packed)[padding_bits(count, bits):].reshape(count, bits).astype(np.int64)
    return stream @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
