"""The Birkhoff hyper-compression codec for one tensor (reference-exact variant).

A pair of weights (w0, w1) is replaced by one integer theta: the point T(theta) of a
trajectory that winds through a square of side L around the tensor's centre. With
m = ceil(sqrt(U)) and a = (L/m^2, L/m),

    T(theta) = c - L/2 + (theta * a mod L)            theta = 0 .. U-1

is an m x m sheared lattice with spacing s = L/m: theta = q*m + r lands on
(x, y) = ((q/m + r/m^2) L, (r/m) L) from the square's corner. Pairs outside the square
are first pulled toward the centre by ring k (class), and the stored index is
theta + U * class. See docs/birkhoff.md and ../shared/reference/birkhoff.md.

All arithmetic is float64; the decoded weights are cast to float32 at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIDE = 0.1  # L, in absolute weight units (the reference's only configuration)
CODEBOOK_SIZES = (1225, 1600)  # U: 35^2 and 40^2
MAX_RINGS = 3  # K_max
TARGET_MAE = 1e-3
FALLBACK_MAE = 0.006


class CodecError(ValueError):
    """A tensor the codec cannot take, with the reason."""


def lattice_side(codebook_size: int) -> int:
    return math.ceil(math.sqrt(codebook_size))


def trajectory(theta: np.ndarray, codebook_size: int, side: float = SIDE) -> np.ndarray:
    """T(theta) - (c - L/2): points of the trajectory from the square's corner. [..., 2]

    theta * a mod L is evaluated exactly as L * (theta mod m^2) / m^2 and
    L * (theta mod m) / m: a float `mod` can land just below L instead of on 0.
    """
    m = lattice_side(codebook_size)
    theta = np.asarray(theta, np.int64)
    x = side * (theta % (m * m)) / (m * m)
    y = side * (theta % m) / m
    return np.stack([x, y], axis=-1)


def nearest_theta(points: np.ndarray, codebook_size: int, side: float = SIDE) -> np.ndarray:
    """argmin_theta ||T(theta) - p|| for points [N, 2] given from the square's corner.

    Closed form. Rows of the lattice are s apart and a row's points s apart, shifted
    by s/m per row. The nearest point lies in one of the two rows around p: a row
    further away is at least s farther in y and at most s/m nearer in x (the shift),
    which never pays. Within a row the two columns around p hold the nearest point.
    The four candidates' distances use the same T(theta) as a brute-force search, and
    ties go to the lowest theta, so the answer is the brute-force argmin.
    """
    m = lattice_side(codebook_size)
    if m * m != codebook_size:
        raise CodecError(f"codebook size {codebook_size} is not a square; use one of {CODEBOOK_SIZES}")
    s = side / m
    points = np.asarray(points, np.float64)
    # Points may sit a rounding error outside the square: clamp to the lattice's rows/columns.
    row0 = np.clip(np.floor(points[:, 1] / s), 0, m - 2).astype(np.int64)
    rows = np.stack([row0, row0 + 1], axis=1)  # [N, 2]
    col0 = np.clip(np.floor((points[:, 0:1] - rows * (s / m)) / s), 0, m - 2).astype(np.int64)
    rows = np.repeat(rows, 2, axis=1)  # [N, 4]
    cols = np.repeat(col0, 2, axis=1) + np.array([0, 1, 0, 1])
    thetas = cols * m + rows
    candidates = trajectory(thetas, codebook_size, side)  # [N, 4, 2]
    dist = ((candidates - points[:, None, :]) ** 2).sum(-1)
    nearest = dist == dist.min(axis=1, keepdims=True)
    return np.where(nearest, thetas, codebook_size).min(axis=1)


@dataclass
class EncodedTensor:
    """One tensor's codes and the few floats needed to decode it."""

    indices: np.ndarray  # int64 [n_pairs]: theta + U * class
    center: np.ndarray  # float64 [2]
    farthest: np.ndarray  # float64 [2], the pair farthest from the centre
    codebook_size: int  # U
    rings: int  # K
    shape: tuple[int, ...]  # original shape
    padded: bool  # one padding element was appended (per row for Linear weights)
    row_pairs: bool  # pairs along the input dimension of a [out, in] weight
    mae: float
    side: float = SIDE

    @property
    def bits(self) -> int:
        return max(1, int(self.indices.max()).bit_length()) if self.indices.size else 1


def to_pairs(tensor: np.ndarray, row_pairs: bool) -> tuple[np.ndarray, bool]:
    """[n, 2] pairs; a Linear weight [out, in] pairs along `in` (odd `in`: each row padded)."""
    values = np.asarray(tensor, np.float64)
    fill = values.mean() if values.size else 0.0
    if row_pairs:
        rows = values.reshape(values.shape[0], -1)
        padded = rows.shape[1] % 2 == 1
        if padded:
            rows = np.concatenate([rows, np.full((rows.shape[0], 1), fill)], axis=1)
        return rows.reshape(-1, 2), padded
    flat = values.reshape(-1)
    padded = flat.size % 2 == 1
    if padded:
        flat = np.append(flat, fill)
    return flat.reshape(-1, 2), padded


def from_pairs(pairs: np.ndarray, shape: tuple[int, ...], padded: bool, row_pairs: bool) -> np.ndarray:
    if row_pairs:
        rows = pairs.reshape(shape[0], -1)
        return (rows[:, :-1] if padded else rows).reshape(shape)
    flat = pairs.reshape(-1)
    return (flat[:-1] if padded else flat).reshape(shape)


def _ring_radii(center, farthest, rings: int, side: float) -> np.ndarray:
    """r_k for k = 0..K (r_0 = L/2, r_K = D)."""
    half = side / 2
    distance = float(np.linalg.norm(np.asarray(farthest) - np.asarray(center)))
    if rings == 0:
        return np.array([half])
    step = (distance - half) / rings
    return half + step * np.arange(rings + 1)


def encode_pairs(pairs: np.ndarray, codebook_size: int, rings: int, side: float = SIDE):
    """(indices, center, farthest) for one (U, K) choice."""
    center = pairs.mean(axis=0)
    offsets = pairs - center
    norms = np.sqrt((offsets**2).sum(axis=1))
    farthest = pairs[int(np.argmax(norms))] if len(pairs) else center
    radii = _ring_radii(center, farthest, rings, side)
    inner = np.abs(offsets).max(axis=1) <= side / 2
    if rings == 0 or inner.all():
        ring = np.zeros(len(pairs), np.int64)
    else:
        # Smallest k >= 1 with ||P - c|| <= r_k; float rounding may leave D just above r_K.
        ring = np.minimum(np.searchsorted(radii[1:], norms, side="left") + 1, rings)
        ring = np.where(inner, 0, ring)
    scale = (side / 2) / radii[ring]  # f_k, 1 for the inner square
    pulled = center + scale[:, None] * offsets
    theta = nearest_theta(pulled - (center - side / 2), codebook_size, side)
    return theta + codebook_size * ring, center, farthest


def decode_pairs(indices: np.ndarray, center, farthest, codebook_size: int, rings: int,
                 side: float = SIDE) -> np.ndarray:
    indices = np.asarray(indices, np.int64)
    ring = indices // codebook_size
    theta = indices % codebook_size
    radii = _ring_radii(center, farthest, rings, side)
    point = np.asarray(center) - side / 2 + trajectory(theta, codebook_size, side)
    scale = (side / 2) / radii[ring]
    return np.asarray(center) + (point - np.asarray(center)) / scale[:, None]


def decode(encoded: EncodedTensor) -> np.ndarray:
    pairs = decode_pairs(encoded.indices, encoded.center, encoded.farthest,
                         encoded.codebook_size, encoded.rings, encoded.side)
    return from_pairs(pairs, encoded.shape, encoded.padded, encoded.row_pairs).astype(np.float32)


def encode(tensor: np.ndarray, row_pairs: bool = False, side: float = SIDE) -> EncodedTensor | None:
    """Search U and K as the reference does; None when the tensor should stay raw."""
    values = np.asarray(tensor)
    if not np.all(np.isfinite(values)):
        raise CodecError("tensor contains NaN or infinite values; fix the model before compressing it")
    if row_pairs and values.ndim != 2:
        raise CodecError(f"pairs along rows need a 2-D [out, in] weight, got shape {values.shape}")
    pairs, padded = to_pairs(values, row_pairs)
    original = values.astype(np.float64)
    offsets = pairs - pairs.mean(axis=0)
    has_outer = bool((np.abs(offsets).max(axis=1) > side / 2).any())
    best = None
    for codebook_size in CODEBOOK_SIZES:
        for rings in (range(1, MAX_RINGS + 1) if has_outer else (0,)):
            indices, center, farthest = encode_pairs(pairs, codebook_size, rings, side)
            decoded = from_pairs(decode_pairs(indices, center, farthest, codebook_size, rings, side),
                                 values.shape, padded, row_pairs)
            mae = float(np.abs(decoded - original).mean())
            if best is None or mae < best.mae:
                best = EncodedTensor(indices, center, farthest, codebook_size, rings,
                                     tuple(values.shape), padded, row_pairs, mae, side)
            if mae <= TARGET_MAE:
                break
        if best.mae <= TARGET_MAE:
            break
    return None if best.mae > FALLBACK_MAE else best
