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

The knobs (L, the codebook sizes U, K_max, the target and fall-back errors, the scaled
variant's unit) are a frozen `Settings`. Its defaults are the authors' configuration and
produce what the module constants always did, plus samedge's relative-error fall-back
(FALLBACK_REL_RMSE), which no tensor of the models measured here reaches.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from plugins.hyperlinear import spec

SIDE = 0.1  # L, in absolute weight units (the reference's only configuration)
CODEBOOK_SIZES = (1225, 1600)  # U: 35^2 and 40^2
MAX_RINGS = 3  # K_max
TARGET_MAE = 1e-3
FALLBACK_MAE = 0.006
UNIT_RMS = 0.03  # the scaled variant's unit (scaled.py; chosen by a sweep, docs/birkhoff.md)
# Relative-error fall-back (samedge's, not the authors'): a tensor whose error relative to its
# bulk (robust_relative_error) is above this is coded again in its own unit (model.py; the
# reference variant) and stays raw if that is no better: heavy tails, outliers and tiny
# magnitudes code badly in the authors' absolute units. No tensor of the demo, tiny or seeded
# vit_b models comes near it with the other defaults (worst 0.117), so their codes are the
# authors'; docs/birkhoff.md, docs/benchmarks/rate-distortion.md. None turns it off.
FALLBACK_REL_RMSE = 0.2


class CodecError(ValueError):
    """A tensor the codec cannot take, with the reason."""


def lattice_side(codebook_size: int) -> int:
    return math.ceil(math.sqrt(codebook_size))


@dataclass(frozen=True)
class Settings:
    """The codec's knobs. The defaults are the authors' configuration, plus samedge's
    relative-error fall-back (docs/birkhoff.md).

    - side: L, the square's side (absolute units; the scaled variant's are units of each
      row's scale, so there only side / unit_rms matters);
    - codebook_sizes: U tried in order, each with K = 1 .. max_rings (K = 0 when every
      pair lies in the square), stopping at the first encoding within target_mae;
    - fill_bits: instead of codebook_sizes, (lowest, highest) index width b: for each b in
      turn and each K, U is the largest square with U (K + 1) <= 2^b, so that no index
      value of the b bits goes unused (the authors' U = 1225, K = 1 uses 2450 of 12 bits'
      4096); the best K of a width is kept, and the first width within target_mae wins;
    - fallback_mae: above it (absolute MAE, or in units for the scaled variant) the
      tensor stays raw (None: never);
    - fallback_rel_rmse: above this robust_relative_error the tensor is recoded in its own
      unit (reference variant, model.py) or else stays raw (None: never); samedge's, for
      heavy tails, outliers and tiny magnitudes (docs/birkhoff.md);
    - unit_rms: the scaled variant's unit (scaled.py); the reference variant ignores it.

    Every setting is one the deployed decoders take (plugins/hyperlinear/spec.py): U a
    square of at least 4, at most spec.MAX_GAINS - 1 rings, indices within 16 bits.
    """

    side: float = SIDE
    codebook_sizes: tuple[int, ...] = CODEBOOK_SIZES
    max_rings: int = MAX_RINGS
    target_mae: float = TARGET_MAE
    fallback_mae: float | None = FALLBACK_MAE
    fallback_rel_rmse: float | None = FALLBACK_REL_RMSE
    unit_rms: float = UNIT_RMS
    fill_bits: tuple[int, int] | None = None

    def __post_init__(self):
        object.__setattr__(self, "codebook_sizes", tuple(int(u) for u in self.codebook_sizes))
        if self.fill_bits is not None:
            object.__setattr__(self, "fill_bits", tuple(int(b) for b in self.fill_bits))
        problems = []
        if not (math.isfinite(self.side) and self.side > 0):
            problems.append(f"side must be a positive number, got {self.side}")
        if not 1 <= self.max_rings <= spec.MAX_GAINS - 1:
            problems.append(f"max_rings must be in 1..{spec.MAX_GAINS - 1} (the decoders' bound), "
                            f"got {self.max_rings}")
        if not self.codebook_sizes:
            problems.append("codebook_sizes is empty")
        for u in self.codebook_sizes:
            if u < 4 or math.isqrt(u) ** 2 != u:
                problems.append(f"codebook size {u} is not a square of at least 4 (35^2 = 1225, 40^2 = 1600, ...)")
            elif u * (self.max_rings + 1) > 1 << spec.MAX_INDEX_BITS:
                problems.append(f"codebook size {u} with {self.max_rings} rings needs indices above "
                                f"{spec.MAX_INDEX_BITS} bits")
        if self.fill_bits is not None:
            low, high = self.fill_bits if len(self.fill_bits) == 2 else (0, -1)
            if not 1 <= low <= high <= spec.MAX_INDEX_BITS or (1 << low) // (self.max_rings + 1) < 4:
                problems.append(f"fill_bits must be (low, high) with low <= high <= {spec.MAX_INDEX_BITS} "
                                f"and room for a 2 x 2 lattice at low bits, got {self.fill_bits}")
        for name in ("target_mae", "fallback_mae", "fallback_rel_rmse", "unit_rms"):
            value = getattr(self, name)
            if value is None and name in ("target_mae", "unit_rms"):
                problems.append(f"{name} must be set")
            elif value is not None and not (math.isfinite(value) and value > 0):
                problems.append(f"{name} must be a positive number, got {value}")
        if problems:
            raise CodecError("; ".join(problems))

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready; Settings.from_dict(s.to_dict()) == s."""
        data = dataclasses.asdict(self)
        data["codebook_sizes"] = list(self.codebook_sizes)
        data["fill_bits"] = None if self.fill_bits is None else list(self.fill_bits)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Settings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CodecError(f"unknown codec settings {unknown}; known: {sorted(known)}")
        data = dict(data)
        if data.get("fill_bits") is not None:
            data["fill_bits"] = tuple(data["fill_bits"])
        if "codebook_sizes" in data:
            data["codebook_sizes"] = tuple(data["codebook_sizes"])
        return cls(**data)

    def search_plan(self, has_outer: bool) -> list[tuple[list[tuple[int, int]], bool]]:
        """Groups of (U, K) candidates in search order, each with whether every candidate of
        the group is tried (fill_bits: same width, keep the best) or the group stops at the
        first within target_mae (the authors' K loop)."""
        rings = range(1, self.max_rings + 1) if has_outer else (0,)
        if self.fill_bits is None:
            return [([(u, k) for k in rings], False) for u in self.codebook_sizes]
        low, high = self.fill_bits
        return [([(math.isqrt((1 << bits) // (k + 1)) ** 2, k) for k in rings], True)
                for bits in range(low, high + 1)]


DEFAULT_SETTINGS = Settings()


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


def encode(tensor: np.ndarray, row_pairs: bool = False, side: float | None = None,
           settings: Settings = DEFAULT_SETTINGS) -> EncodedTensor | None:
    """Search U and K as settings say (by default as the reference does); None when the
    tensor should stay raw (its MAE above settings.fallback_mae). `side`, when given,
    overrides settings.side.

    Same result as encoding every (U, K) choice in full, but inner pairs (class 0) do
    not depend on K, so they are quantised once per U and only the outer ones per K.
    """
    if side is not None:
        settings = settings.replace(side=side)
    side = settings.side
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
    all_inner = outer.size == 0  # the common case: skip the boolean gathers
    inner_pairs, inner_valid = (pairs, valid) if all_inner else (pairs[inner], valid[inner])

    def quantise_inner(codebook_size: int) -> tuple[np.ndarray, float]:
        inner_theta = nearest_theta(inner_pairs - corner, codebook_size, side)
        inner_error = np.abs(corner + trajectory(inner_theta, codebook_size, side) - inner_pairs)
        inner_error = float(inner_error.sum() if not padded else (inner_error * inner_valid).sum())
        if all_inner:
            return inner_theta, inner_error
        theta = np.empty(len(pairs), np.int64)
        theta[inner] = inner_theta
        return theta, inner_error

    best = None
    for group, exhaustive in settings.search_plan(has_outer=not all_inner):
        group_best, inner_cache = None, {}
        for codebook_size, rings in group:
            if codebook_size not in inner_cache:
                inner_cache = {codebook_size: quantise_inner(codebook_size)}  # one U's codes at a time
            theta, error = inner_cache[codebook_size]
            indices = theta.copy()
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
            if group_best is None or mae < group_best.mae:
                group_best = EncodedTensor(indices, center, farthest, codebook_size, rings,
                                           tuple(values.shape), padded, row_pairs, mae, side)
            if not exhaustive and mae <= settings.target_mae:
                break
        # A group within the target ends the search (an earlier group missed it, so its best
        # is also the best so far); otherwise keep the lowest error seen.
        if best is None or group_best.mae < best.mae or group_best.mae <= settings.target_mae:
            best = group_best
        if best.mae <= settings.target_mae:
            break
    if settings.fallback_mae is not None and best.mae > settings.fallback_mae:
        return None
    return best


def robust_relative_error(values: np.ndarray, decoded: np.ndarray) -> float | None:
    """||W' - W|| / ||W||, where ||W|| is that of the tensor's bulk when it is smaller: the
    RMS taken as sqrt(median^2 + (1.4826 MAD)^2), which is the RMS for a Gaussian tensor
    and ignores up to half the entries however large. Never below the plain relative
    error; None when W is all zeros.

    The plain figure hides damage done to the bulk of a heavy-tailed tensor: a few
    outliers carry most of ||W||, while the outer rings they widen quantise every weight
    outside the square coarsely and their own errors grow with the rings' gain.
    """
    values = np.asarray(values, np.float64).reshape(-1)
    error = float(np.linalg.norm(np.asarray(decoded, np.float64).reshape(-1) - values))
    rms = math.sqrt(float(np.square(values).mean()))
    if rms == 0:
        return None
    median = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - median)))
    bulk = math.hypot(median, spread)
    reference = min(rms, bulk) if bulk > 0 else rms  # MAD 0 (mostly equal values): the plain RMS
    return error / (reference * math.sqrt(values.size))
