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
    px, py = points[:, 0], points[:, 1]
    best_theta = np.full(len(points), codebook_size, np.int64)
    best_distance = np.full(len(points), np.inf)
    # Points may sit a rounding error outside the square: clamp to the lattice's rows/columns.
    row0 = np.clip(np.floor(py / s), 0, m - 2).astype(np.int64)
    for row in (row0, row0 + 1):
        col0 = np.clip(np.floor((px - row * (s / m)) / s), 0, m - 2).astype(np.int64)
        y = side * row / m  # T(theta) written out for theta < m^2: the same floats as trajectory()
        dy2 = (y - py) ** 2
        for col in (col0, col0 + 1):
            theta = col * m + row
            distance = (side * theta / (m * m) - px) ** 2 + dy2
            better = (distance < best_distance) | ((distance == best_distance) & (theta < best_theta))
            best_theta = np.where(better, theta, best_theta)
            best_distance = np.where(better, distance, best_distance)
    return best_theta


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
    mae: float  # mean absolute error over the tensor's weights, in the tensor's units
    side: float = SIDE
    # Scale-aware variant only: the unit the lattice was applied in, per output row
    # (row_pairs) or for the whole tensor ([1]); None for the reference codec.
    scale: np.ndarray | None = None

    @property
    def bits(self) -> int:
        return max(1, int(self.indices.max()).bit_length()) if self.indices.size else 1

    @property
    def gains(self) -> np.ndarray:
        """r_k / (L/2) for k = 0..K: how far ring k's codes are pushed back out."""
        return ring_radii(self.center, self.farthest, self.rings, self.side) / (self.side / 2)


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


def ring_radii(center, farthest, rings: int, side: float = SIDE) -> np.ndarray:
    """r_k for k = 0..K (r_0 = L/2, r_K = D = ||farthest - centre||)."""
    half = side / 2
    distance = float(np.linalg.norm(np.asarray(farthest, np.float64) - np.asarray(center, np.float64)))
    if rings == 0:
        return np.array([half])
    step = (distance - half) / rings
    return half + step * np.arange(rings + 1)


def decode_pairs(indices: np.ndarray, center, gains: np.ndarray, codebook_size: int,
                 side: float = SIDE) -> np.ndarray:
    """w = c + (T(theta) - c) * r_k / (L/2), in float64. [n, 2]"""
    indices = np.asarray(indices, np.int64)
    center = np.asarray(center, np.float64)
    offset = trajectory(indices % codebook_size, codebook_size, side) - side / 2  # T - c
    return center + offset * np.asarray(gains, np.float64)[indices // codebook_size][:, None]


def decode(encoded: EncodedTensor) -> np.ndarray:
    pairs = decode_pairs(encoded.indices, encoded.center, encoded.gains, encoded.codebook_size, encoded.side)
    values = from_pairs(pairs, encoded.shape, encoded.padded, encoded.row_pairs)
    if encoded.scale is not None:
        values = values * broadcast_scale(encoded.scale, encoded.shape)
    return values.astype(np.float32)


def broadcast_scale(scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    scale = np.asarray(scale, np.float64)
    return scale.reshape((-1,) + (1,) * (len(shape) - 1)) if scale.size > 1 else scale.reshape(())


def _valid_elements(shape: tuple[int, ...], n_pairs: int, padded: bool, row_pairs: bool) -> np.ndarray:
    """[n_pairs, 2] bool: False on the padding element(s)."""
    valid = np.ones((n_pairs, 2), bool)
    if padded and row_pairs:
        valid.reshape(shape[0], -1)[:, -1] = False
    elif padded:
        valid[-1, 1] = False
    return valid


def check_tensor(values: np.ndarray, row_pairs: bool) -> None:
    if not np.all(np.isfinite(values)):
        raise CodecError("tensor contains NaN or infinite values; fix the model before compressing it")
    if row_pairs and values.ndim != 2:
        raise CodecError(f"pairs along rows need a 2-D [out, in] weight, got shape {values.shape}")
    if values.size == 0:
        raise CodecError("empty tensor; nothing to encode")


def encode(tensor: np.ndarray, row_pairs: bool = False, side: float = SIDE) -> EncodedTensor | None:
    """Search U and K as the reference does; None when the tensor should stay raw.

    Same result as encoding every (U, K) choice in full, but inner pairs (class 0) do
    not depend on K, so they are quantised once per U and only the outer ones per K.
    """
    values = np.asarray(tensor)
    check_tensor(values, row_pairs)
    pairs, padded = to_pairs(values, row_pairs)
    valid = _valid_elements(values.shape, len(pairs), padded, row_pairs)
    center = pairs.mean(axis=0)
    offsets = pairs - center
    norms = np.sqrt((offsets**2).sum(axis=1))
    farthest = pairs[int(np.argmax(norms))]
    corner = center - side / 2
    inner = np.abs(offsets).max(axis=1) <= side / 2
    outer = np.flatnonzero(~inner)
    best = None
    all_inner = outer.size == 0  # the common case: skip the boolean gathers
    inner_pairs, inner_valid = (pairs, valid) if all_inner else (pairs[inner], valid[inner])
    for codebook_size in CODEBOOK_SIZES:
        inner_theta = nearest_theta(inner_pairs - corner, codebook_size, side)
        inner_error = np.abs(corner + trajectory(inner_theta, codebook_size, side) - inner_pairs)
        inner_error = float(inner_error.sum() if not padded else (inner_error * inner_valid).sum())
        if all_inner:
            theta = inner_theta
        else:
            theta = np.empty(len(pairs), np.int64)
            theta[inner] = inner_theta
        for rings in (range(1, MAX_RINGS + 1) if outer.size else (0,)):
            indices, error = theta.copy(), inner_error
            if outer.size:
                radii = ring_radii(center, farthest, rings, side)
                # Smallest k >= 1 with ||P - c|| <= r_k; rounding may leave D just above r_K.
                ring = np.minimum(np.searchsorted(radii[1:], norms[outer], side="left") + 1, rings)
                pull = ((side / 2) / radii[ring])[:, None]  # f_k
                outer_theta = nearest_theta(center + pull * offsets[outer] - corner, codebook_size, side)
                decoded = center + (corner + trajectory(outer_theta, codebook_size, side) - center) / pull
                error += float((np.abs(decoded - pairs[outer]) * valid[outer]).sum())
                indices[outer] = outer_theta + codebook_size * ring
            mae = error / values.size
            if best is None or mae < best.mae:
                best = EncodedTensor(indices, center, farthest, codebook_size, rings,
                                     tuple(values.shape), padded, row_pairs, mae, side)
            if mae <= TARGET_MAE:
                break
        if best.mae <= TARGET_MAE:
            break
    return None if best.mae > FALLBACK_MAE else best
