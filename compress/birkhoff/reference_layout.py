"""Read (and write) the authors' tool's `hyper_model.safetensors` key layout.

So that a model compressed with Juntongkuki/Birkhoff-Model-Compression deploys with
samedge. The layout (learned from the tool's code; see docs/birkhoff.md):

- globals `rect_l` (float32, L) and `num_inner_list` (int64, candidate U);
- raw tensors: `<name>.origin_param` and `<name>.load_type` = 0;
- encoded tensors: `.load_type` (1 decode at load, 2 Linear kept encoded),
  `.encoded_index` (uint8, MSB-first), `.padding_bits`, `.uint_i` (bit width), `.U` (an
  index into num_inner_list), `.K`, `.if_padding`, `.center_node`, `.farthest_node`
  (float32 [2]) and `.original_shape` (int64). No architecture: it comes from the shapes.

The tool decodes with a float32 table of T(theta) built from a normalised direction
vector; samedge decodes the same lattice exactly. `check_codebook` verifies that the two
tables agree to float32 rounding for the file's L and U before anything is imported.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from runtime.atomic import atomic_write

from ..architectures import build_sam, get_config
from ..families.sam import detect_official_type
from ..checkpoint_file import CheckpointError
from .codec import EncodedTensor, decode, trajectory
from .model import DECODE_AT_LOAD, HYPER_LINEAR, RAW, CompressedModel, Entry, install_hyper_linears
from .packing import pack_indices, padding_bits, unpack_indices

LOAD_TYPES = {0: RAW, 1: DECODE_AT_LOAD, 2: HYPER_LINEAR}
CODEBOOK_TOLERANCE = 1e-5  # table differences beyond float32 rounding mean another codebook


def reference_table(side: float, codebook_size: int) -> np.ndarray:
    """T(theta) - (c - L/2) as the authors' tool computes it (float32, their op order)."""
    L = torch.tensor(side, dtype=torch.float32)
    m = math.ceil(math.sqrt(codebook_size))
    sine = L / torch.sqrt(L**2 + (L / m) ** 2)
    step = (L / sine) / m
    direction = torch.stack([L / m, L])
    jump = direction / torch.linalg.norm(direction) * step
    theta = torch.arange(codebook_size, dtype=torch.float32)[:, None]
    return torch.remainder(theta * jump[None, :], L).double().numpy()


def check_codebook(side: float, codebook_size: int) -> None:
    gap = np.abs(reference_table(side, codebook_size) - trajectory(np.arange(codebook_size), codebook_size, side))
    if gap.max() > CODEBOOK_TOLERANCE:
        raise CheckpointError(
            f"the file's codebook (L={side}, U={codebook_size}) wraps differently from samedge's exact "
            f"lattice (largest gap {gap.max():.3g}); decode it with the authors' tool and compress the "
            "dense model with python -m compress.birkhoff instead"
        )


def _scalar(tensors: dict, key: str) -> int:
    return int(tensors[key].reshape(-1)[0])


def read_reference(path, model_type: str | None = None) -> CompressedModel:
    """A CompressedModel (HyperLinear layers installed) from the tool's output file."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if "rect_l" not in tensors or "num_inner_list" not in tensors:
        raise CheckpointError(f"{path}: no rect_l / num_inner_list; not a Birkhoff tool hyper_model.safetensors")
    side = float(tensors.pop("rect_l"))
    codebook_sizes = [int(u) for u in tensors.pop("num_inner_list").tolist()]
    names = sorted({key.rsplit(".", 1)[0] for key in tensors if key.endswith(".load_type")})
    shapes = {}
    for name in names:
        if f"{name}.origin_param" in tensors:
            shapes[name] = tuple(tensors[f"{name}.origin_param"].shape)
        else:
            shapes[name] = tuple(int(v) for v in tensors[f"{name}.original_shape"].tolist())
    # The tool compresses official SAM models; other architectures must be named.
    detected = model_type or detect_official_type({n: torch.empty(s, device="meta") for n, s in shapes.items()})
    for size in codebook_sizes:
        check_codebook(side, size)
    model = build_sam(get_config(detected))
    entries, state = {}, {}
    for name in names:
        role = LOAD_TYPES.get(_scalar(tensors, f"{name}.load_type"))
        if role is None:
            raise CheckpointError(f"{path}: {name} has an unknown load_type")
        if role == RAW:
            state[name] = tensors[f"{name}.origin_param"]
            entries[name] = Entry(name, RAW, shapes[name])
            continue
        encoded = _read_encoded(tensors, name, shapes[name], side, codebook_sizes, row_pairs=role == HYPER_LINEAR)
        entries[name] = Entry(name, role, shapes[name], encoded, rel_rmse=None)
        if role == DECODE_AT_LOAD:
            state[name] = torch.from_numpy(decode(encoded))
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: tensors do not fit the {detected} architecture: {str(err)[:300]}") from err
    hyper = {n for n, e in entries.items() if e.role == HYPER_LINEAR}
    if result.unexpected_keys or set(result.missing_keys) != hyper:
        raise CheckpointError(f"{path}: tensors do not fit the {detected} architecture "
                              f"(missing {sorted(set(result.missing_keys) - hyper)[:5]})")
    install_hyper_linears(model, entries)
    return CompressedModel(model.eval(), entries, "reference", extra={"imported_from": str(path)})


def _read_encoded(tensors, name, shape, side, codebook_sizes, row_pairs) -> EncodedTensor:
    bits = _scalar(tensors, f"{name}.uint_i")
    padded = bool(_scalar(tensors, f"{name}.if_padding"))
    count = int(np.prod(shape))
    if row_pairs:
        pairs = shape[0] * math.ceil(shape[1] / 2)
    else:
        pairs = (count + padded) // 2
    packed = tensors[f"{name}.encoded_index"].numpy()
    if padding_bits(pairs, bits) != _scalar(tensors, f"{name}.padding_bits"):
        raise CheckpointError(f"{name}: padding_bits disagrees with {pairs} indices of {bits} bits; file damaged")
    try:
        indices = unpack_indices(packed, pairs, bits)
    except ValueError as err:
        raise CheckpointError(f"{name}: {err}; file damaged") from err
    return EncodedTensor(
        indices, tensors[f"{name}.center_node"].double().numpy(), tensors[f"{name}.farthest_node"].double().numpy(),
        codebook_sizes[_scalar(tensors, f"{name}.U")], _scalar(tensors, f"{name}.K"), tuple(shape),
        padded, row_pairs, mae=None, side=side,
    )


def write_reference(compressed: CompressedModel, path) -> None:
    """Write in the tool's layout (reference variant only: the layout has no scales)."""
    if compressed.variant != "reference":
        raise ValueError("the authors' layout has no per-row scales; only the reference variant can be written")
    in_units = [n for n, e in compressed.entries.items() if e.encoded is not None and e.encoded.scale is not None]
    if in_units:
        raise ValueError(f"{in_units[0]} (and {len(in_units) - 1} more) fell back to samedge's coding in units, "
                         "which the authors' layout cannot hold; compress with fallback_rel_rmse=None to write it")
    state = compressed.model.state_dict()
    u8 = lambda v: torch.tensor(v, dtype=torch.uint8)  # noqa: E731 - the tool's 0-d uint8 scalars
    sides = {e.encoded.side for e in compressed.entries.values() if e.encoded is not None}
    sizes = sorted({e.encoded.codebook_size for e in compressed.entries.values() if e.encoded is not None})
    if len(sides) > 1:
        raise ValueError("tensors were encoded with different L; the layout holds one")
    out = {"rect_l": torch.tensor(sides.pop() if sides else 0.1, dtype=torch.float32),
           "num_inner_list": torch.tensor(sizes or [1225, 1600], dtype=torch.int64)}
    for name, entry in compressed.entries.items():
        e = entry.encoded
        if e is None:
            out[f"{name}.origin_param"] = state[name].contiguous()
            out[f"{name}.load_type"] = torch.tensor([0], dtype=torch.uint8)
            continue
        out[f"{name}.load_type"] = u8(2 if entry.role == HYPER_LINEAR else 1)
        out[f"{name}.encoded_index"] = torch.from_numpy(pack_indices(e.indices, e.bits))
        out[f"{name}.padding_bits"] = u8(padding_bits(e.indices.size, e.bits))
        out[f"{name}.uint_i"] = u8(e.bits)
        out[f"{name}.U"] = u8(sizes.index(e.codebook_size))
        out[f"{name}.K"] = u8(e.rings)
        out[f"{name}.if_padding"] = u8(int(e.padded))
        out[f"{name}.center_node"] = torch.tensor(e.center, dtype=torch.float32)
        out[f"{name}.farthest_node"] = torch.tensor(e.farthest, dtype=torch.float32)
        out[f"{name}.original_shape"] = torch.tensor(e.shape, dtype=torch.int64)
    atomic_write(path, lambda tmp: save_file(out, tmp))
