"""Compress a whole SAM model with Birkhoff, the way the reference tool chooses tensors.

- buffers, and parameters with fewer than MIN_ELEMENTS elements: stay raw;
- nn.Linear weights: encoded with pairs along the input dimension and kept encoded at
  run time (HyperLinear);
- every other parameter (conv kernels, biases, norms, embeddings, positional
  embeddings): encoded for storage, decoded to dense float32 when loaded;
- any tensor whose error stays above the fall-back threshold: raw; and (samedge's, when
  settings.fallback_rel_rmse is set) any whose error relative to its bulk
  (codec.robust_relative_error) is above that limit.

The codec's knobs travel as one codec.Settings (defaults: the authors' configuration, plus
samedge's relative fall-back at 0.2).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from plugins.hyperlinear import reference

from . import codec, scaled
from .hyper_linear import HyperLinear

MIN_ELEMENTS = 10
VARIANTS = ("reference", "scaled")

# What happens to a tensor; the reference's `.load_type` codes in brackets.
RAW = "raw"  # [0] too small, a buffer, or fell back
DECODE_AT_LOAD = "decode_at_load"  # [1]
HYPER_LINEAR = "hyper_linear"  # [2]
# The model attribute holding {parameter name: EncodedTensor} of its decode-at-load tensors:
# the ONNX export writes them as HyperTensor nodes instead of float32 initializers.
CODED_TENSORS = "birkhoff_coded_tensors"
# The checkpoint metadata entry (JSON) that records the codec.Settings a file was written with.
SETTINGS_KEY = "birkhoff_settings"


@dataclass
class Entry:
    """One parameter of the compressed model."""

    name: str
    role: str
    shape: tuple[int, ...]
    encoded: codec.EncodedTensor | None = None
    fell_back: bool = False  # encodable, but the error was above the fall-back threshold
    rel_rmse: float | None = 0.0  # ||W - W'|| / ||W||: 0 for raw tensors, None for all-zero ones
    norm: float | None = None  # ||W||, to combine relative errors over tensors (None when not known)
    robust_rel_rmse: float | None = None  # codec.robust_relative_error of the encoding (None: not known)
    fall_back_reason: str | None = None  # FELL_BACK_MAE or FELL_BACK_REL when fell_back

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass
class CompressedModel:
    model: nn.Module  # the Sam with HyperLinear layers and decoded parameters
    entries: dict[str, Entry]
    variant: str
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)
    settings: codec.Settings | None = None  # what compress_model used (None: read from a file)


FELL_BACK_MAE = "mae"  # the codec's MAE above settings.fallback_mae (the authors' rule)
FELL_BACK_REL = "rel_rmse"  # robust relative error above settings.fallback_rel_rmse (samedge's)


def resolve_settings(settings: codec.Settings | None = None, unit_rms: float | None = None) -> codec.Settings:
    """`settings` (default: codec.DEFAULT_SETTINGS), with `unit_rms` in place of its own when given."""
    settings = settings or codec.DEFAULT_SETTINGS
    return settings if unit_rms is None else settings.replace(unit_rms=unit_rms)


def _encode(values: np.ndarray, row_pairs: bool, variant: str, settings: codec.Settings):
    """(codes or None, float32 decoded values or None, fall-back reason or None, robust rel. error)."""
    if variant == "reference":
        encoded = codec.encode(values, row_pairs=row_pairs, settings=settings)
    elif variant == "scaled":
        encoded = scaled.encode(values, row_pairs=row_pairs, settings=settings)
    else:
        raise ValueError(f"unknown Birkhoff variant {variant!r}; choose one of {VARIANTS}")
    if encoded is None:
        return None, None, FELL_BACK_MAE, None
    # What the model will hold: the float32 table decode for decode-at-load tensors (as every
    # deployed file decodes them); HyperLinear's float32 decode differs from this by rounding only.
    decoded = codec.decode(encoded) if row_pairs else decoded_values(encoded)
    robust = codec.robust_relative_error(values, decoded)
    limit = settings.fallback_rel_rmse
    if limit is not None and robust is not None and robust > limit:
        if variant == "reference":
            # Before raw, the same lattice in the tensor's own unit (scaled.py): the authors'
            # absolute square is far too coarse for a tensor of small magnitude (SlimSAM-77's
            # seeded pos_embed, std 3e-4: 324 % error) and costs the same bits in units.
            retry = _encode(values, row_pairs, "scaled", settings)
            if retry[0] is not None:
                return retry
        return None, None, FELL_BACK_REL, robust
    return encoded, decoded, None, robust


def encode_tensor(values: np.ndarray, row_pairs: bool, variant: str, unit_rms: float | None = None,
                  settings: codec.Settings | None = None) -> codec.EncodedTensor | None:
    """One tensor's codes, None when it stays raw (either fall-back)."""
    return _encode(np.asarray(values), row_pairs, variant, resolve_settings(settings, unit_rms))[0]


def decoded_values(encoded: codec.EncodedTensor) -> np.ndarray:
    """float32 values of a decode-at-load tensor, as the ONNX HyperTensor node decodes them.

    Not codec.decode (float64, then rounded): the model must hold the very bits that every
    deployed file decodes to, so that parity compares like with like."""
    scale = encoded.scale if encoded.scale is not None else np.ones(1)
    return reference.decode_tensor(
        reference.pack(encoded.indices, encoded.bits), np.asarray(scale, np.float32), shape=encoded.shape,
        codebook_size=encoded.codebook_size, lattice_side=codec.lattice_side(encoded.codebook_size),
        index_bits=encoded.bits, side=encoded.side, center=encoded.center, gains=encoded.gains)


def linear_weight_names(model: nn.Module) -> set[str]:
    return {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def replace_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _encode_parameter(name: str, tensor: torch.Tensor, is_linear: bool, variant: str,
                      settings: codec.Settings):
    """(Entry, decoded float32 values or None)."""
    entry = Entry(name, RAW, tuple(tensor.shape))
    if tensor.numel() < MIN_ELEMENTS:
        return entry, None
    values = tensor.to(torch.float64).numpy()
    try:
        encoded, decoded, reason, entry.robust_rel_rmse = _encode(values, is_linear, variant, settings)
    except codec.CodecError as err:
        raise codec.CodecError(f"{name}: {err}") from err
    if encoded is None:
        entry.fell_back, entry.fall_back_reason = True, reason
        return entry, None
    entry.encoded = encoded
    norm = entry.norm = float(np.linalg.norm(values))
    entry.rel_rmse = float(np.linalg.norm(decoded - values) / norm) if norm > 0 else None
    entry.role = HYPER_LINEAR if is_linear else DECODE_AT_LOAD
    return entry, decoded


def compress_model(model: nn.Module, variant: str = "reference", show_progress: bool = True,
                   workers: int | None = None, unit_rms: float | None = None,
                   settings: codec.Settings | None = None) -> CompressedModel:
    """Encode `model` in place: Linear layers become HyperLinear, other tensors decoded values.

    `settings`: the codec's knobs (default: codec.DEFAULT_SETTINGS); `unit_rms`, when given, replaces
    its unit_rms (the scaled variant's).

    Tensors are encoded in a thread pool: numpy releases the GIL in its array loops, so
    two cores give nearly twice the speed (the codec itself is single-threaded numpy).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown Birkhoff variant {variant!r}; choose one of {VARIANTS}")
    settings = resolve_settings(settings, unit_rms)
    if any(isinstance(m, HyperLinear) for m in model.modules()):
        # Its other tensors already hold decoded values: encoding them again only adds error.
        raise codec.CodecError("the model is already Birkhoff-compressed; use its checkpoint as it is "
                               "(without --compress birkhoff), or compress the original")
    began = time.perf_counter()
    linear_weights = linear_weight_names(model)
    parameters = dict(model.named_parameters())
    # Buffers that are saved (Sam's pixel_mean/std are not), kept raw.
    entries: dict[str, Entry] = {name: Entry(name, RAW, tuple(value.shape))
                                 for name, value in model.state_dict().items() if name not in parameters}
    # Largest first, so that the pool ends with small tensors and both workers stay busy.
    order = sorted(parameters, key=lambda n: -parameters[n].numel())
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(order), desc=f"birkhoff ({variant})",
                                                    unit="tensor", disable=not show_progress) as bar:
        futures = [pool.submit(_encode_parameter, name, parameters[name].detach().cpu(),
                               name in linear_weights, variant, settings) for name in order]
        for future in as_completed(futures):
            bar.update()
        for future in futures:
            entry, decoded = future.result()
            entries[entry.name] = entry
            if entry.role == DECODE_AT_LOAD:
                with torch.no_grad():
                    parameters[entry.name].copy_(torch.from_numpy(decoded))
    install_hyper_linears(model, entries)
    return CompressedModel(model, entries, variant, time.perf_counter() - began, settings=settings)


def install_hyper_linears(model: nn.Module, entries: dict[str, Entry]) -> None:
    """Swap the encoded Linear layers for HyperLinear, and note the decode-at-load tensors' codes."""
    coded = {e.name: e.encoded for e in entries.values() if e.role == DECODE_AT_LOAD}
    object.__setattr__(model, CODED_TENSORS, coded)  # a plain attribute: not a submodule, not saved
    for entry in entries.values():
        if entry.role != HYPER_LINEAR:
            continue
        path = entry.name.rsplit(".", 1)[0]
        linear = model.get_submodule(path)
        bias = linear.bias.detach() if linear.bias is not None else None
        layer = HyperLinear.from_encoded(entry.encoded, bias).to(linear.weight.device)
        replace_module(model, path, layer)
