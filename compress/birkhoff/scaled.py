"""The scale-aware Birkhoff variant: the same lattice, in units of each row's scale.

The reference codec works in absolute weight units (L = 0.1, error targets 1e-3 and
6e-3), tuned for weights whose spread is about 0.02. A tensor of larger magnitude
falls back to raw or lands in coarse outer rings; one of smaller magnitude uses a few
lattice points and gets a large relative error. Here each output row of a Linear
weight (or each whole other tensor) is first divided by a unit chosen so that its RMS
becomes UNIT_RMS; the reference codec then runs unchanged, with its thresholds now
relative; decoding multiplies the unit back. The cost is one float32 per row.
"""

from __future__ import annotations

import numpy as np

from . import codec

UNIT_RMS = codec.UNIT_RMS  # 0.03, chosen by a sweep on the demo model (docs/birkhoff.md)


def units(values: np.ndarray, row_pairs: bool, unit_rms: float = UNIT_RMS) -> np.ndarray:
    """float32-representable scale per row ([out]) or for the tensor ([1])."""
    rows = values.reshape(values.shape[0], -1) if row_pairs else values.reshape(1, -1)
    rms = np.sqrt(np.mean(np.square(rows, dtype=np.float64), axis=1))
    unit = np.where(rms > 0, rms / unit_rms, 1.0)
    return unit.astype(np.float32).astype(np.float64)


def encode(tensor: np.ndarray, row_pairs: bool = False, unit_rms: float | None = None,
           settings: codec.Settings = codec.DEFAULT_SETTINGS) -> codec.EncodedTensor | None:
    """The codec of `settings` in units of each row's scale; `unit_rms`, when given,
    overrides settings.unit_rms."""
    values = np.asarray(tensor, np.float64)
    codec.check_tensor(values, row_pairs)
    unit = units(values, row_pairs, settings.unit_rms if unit_rms is None else unit_rms)
    shape = values.shape
    encoded = codec.encode(values / codec.broadcast_scale(unit, shape), row_pairs=row_pairs, settings=settings)
    if encoded is None:
        return None
    encoded.scale = unit
    encoded.mae = float(np.abs(codec.decode(encoded) - values).mean())  # back in the tensor's units
    return encoded
