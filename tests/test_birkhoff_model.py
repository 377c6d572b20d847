"""Birkhoff at model level: HyperLinear, compress_model, our checkpoint format, the scaled variant."""

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from compress import CheckpointError, build_sam, load_checkpoint, save_checkpoint
from compress.birkhoff import codec, scaled
from compress.birkhoff.hyper_linear import HyperLinear
from compress.birkhoff.__main__ import main as birkhoff_main
from compress.birkhoff.codec import Settings
from compress.birkhoff.model import (
    DECODE_AT_LOAD, FELL_BACK_REL, HYPER_LINEAR, RAW, SETTINGS_KEY, compress_model, encode_tensor,
)
from compress.birkhoff.report import build_report
from compress.birkhoff.packing import pack_indices
from compress.birkhoff.reference_layout import read_reference, write_reference
from compress.birkhoff.storage import load_compressed, save_compressed
from compress.checkpoint_file import read_checkpoint_metadata


@pytest.mark.parametrize("in_features", [96, 33, 2])
def test_hyper_linear_decodes_what_the_codec_decodes(in_features):
    weight = np.random.default_rng(0).normal(0, 0.03, (24, in_features))
    encoded = codec.encode(weight, row_pairs=True)
    layer = HyperLinear.from_encoded(encoded, bias=torch.zeros(24))
    # float32 decode against the float64 one: float32 rounding only
    np.testing.assert_allclose(layer.decoded_weight().numpy(), codec.decode(encoded), rtol=0, atol=2e-7)
    x = torch.randn(5, in_features)
    expected = x @ torch.from_numpy(codec.decode(encoded)).T
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)


def test_scaled_variant_keeps_large_tensors_and_relative_error():
    rng = np.random.default_rng(2)
    large = rng.normal(0, 1.5, (64, 64))
    assert codec.encode(large, row_pairs=True) is None  # the reference falls back to raw
    encoded = scaled.encode(large, row_pairs=True)
    assert encoded is not None and encoded.scale.shape == (64,)
    relative = np.abs(codec.decode(encoded) - large).mean() / np.abs(large).mean()
    assert relative < 0.06
    small = rng.normal(0, 0.002, (64, 64))  # the reference spends few lattice points on it
    ref_rel = np.abs(codec.decode(codec.encode(small, row_pairs=True)) - small).mean() / np.abs(small).mean()
    scaled_rel = np.abs(codec.decode(scaled.encode(small, row_pairs=True)) - small).mean() / np.abs(small).mean()
    assert scaled_rel < ref_rel / 4


@pytest.mark.parametrize("variant", ["reference", "scaled"])
def test_compressed_model_round_trips_through_our_format(tmp_path, variant):
    model = build_sam("tiny", seed=0)
    compressed = compress_model(model, variant, show_progress=False)
    roles = {e.role for e in compressed.entries.values()}
    assert {HYPER_LINEAR, DECODE_AT_LOAD, RAW} <= roles
    linears = [m for m in compressed.model.modules() if isinstance(m, nn.Linear)]
    hypers = [m for m in compressed.model.modules() if isinstance(m, HyperLinear)]
    assert hypers and not linears  # every Linear in tiny SAM is encodable
    path = tmp_path / "tiny-birkhoff.safetensors"
    save_compressed(compressed, path)
    reloaded = load_checkpoint(path)
    assert sum(isinstance(m, HyperLinear) for m in reloaded.modules()) == len(hypers)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.image_encoder(image), compressed.model.image_encoder(image),
                                   rtol=0, atol=0)
    again = load_compressed(path)
    assert again.variant == variant and again.entries.keys() == compressed.entries.keys()


def test_compressed_file_is_smaller_and_errors_are_reported(tmp_path):
    model = build_sam("tiny", seed=0)
    save_checkpoint(model, tmp_path / "dense.safetensors")
    compressed = compress_model(model, show_progress=False)
    save_compressed(compressed, tmp_path / "small.safetensors")
    assert (tmp_path / "small.safetensors").stat().st_size < (tmp_path / "dense.safetensors").stat().st_size / 2
    for entry in compressed.entries.values():
        if entry.encoded is not None:
            assert entry.encoded.mae <= codec.FALLBACK_MAE
            assert entry.rel_rmse is None or 0 < entry.rel_rmse < 1


def test_damaged_compressed_checkpoint_is_refused(tmp_path):
    compressed = compress_model(build_sam("tiny", seed=0), show_progress=False)
    path = tmp_path / "c.safetensors"
    save_compressed(compressed, path)
    tensors = load_file(str(path))
    name = next(k for k in tensors if k.endswith(".codes"))
    tensors[name] = tensors[name][:-1]  # one word short
    save_file(tensors, str(path), metadata=read_checkpoint_metadata(path))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)


def test_non_finite_weights_are_refused_by_name():
    model = build_sam("tiny", seed=0)
    with torch.no_grad():
        model.image_encoder.blocks[0].mlp.lin1.weight[0, 0] = float("nan")
    with pytest.raises(codec.CodecError, match="blocks.0.mlp.lin1.weight: .*NaN"):
        compress_model(model, show_progress=False)


def test_reference_layout_round_trip(tmp_path):
    compressed = compress_model(build_sam("tiny", seed=0), show_progress=False)
    path = tmp_path / "hyper_model.safetensors"
    write_reference(compressed, path)
    imported = read_reference(path, model_type="tiny")
    assert {n: e.role for n, e in imported.entries.items()} == {n: e.role for n, e in compressed.entries.items()}
    for name, entry in compressed.entries.items():
        if entry.encoded is not None:
            np.testing.assert_array_equal(imported.entries[name].encoded.indices, entry.encoded.indices)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # centres travel as float32 in that layout: float32 rounding only
        torch.testing.assert_close(imported.model.image_encoder(image), compressed.model.image_encoder(image),
                                   rtol=1e-5, atol=1e-5)


def test_reference_layout_with_hand_made_keys(tmp_path):
    """A file written key by key as the authors' tool writes it (0-d uint8 scalars, [1] raw flags)."""
    model = build_sam("tiny", seed=0)
    tensors = {"rect_l": torch.tensor(0.1), "num_inner_list": torch.tensor([1225, 1600])}
    expected = {}
    for name, value in model.state_dict().items():
        values = value.double().numpy()
        is_linear = name.endswith("lin1.weight")
        encoded = codec.encode(values, row_pairs=is_linear) if value.numel() >= 10 else None
        if encoded is None or not (is_linear or name.endswith("norm1.weight")):
            tensors[f"{name}.origin_param"], tensors[f"{name}.load_type"] = value, torch.tensor([0], dtype=torch.uint8)
            continue
        u8 = lambda v: torch.tensor(v, dtype=torch.uint8)  # noqa: E731
        tensors.update({
            f"{name}.load_type": u8(2 if is_linear else 1),
            f"{name}.encoded_index": torch.from_numpy(pack_indices(encoded.indices, encoded.bits)),
            f"{name}.padding_bits": u8((-encoded.indices.size * encoded.bits) % 8), f"{name}.uint_i": u8(encoded.bits),
            f"{name}.U": u8([1225, 1600].index(encoded.codebook_size)), f"{name}.K": u8(encoded.rings),
            f"{name}.if_padding": u8(0), f"{name}.center_node": torch.tensor(encoded.center, dtype=torch.float32),
            f"{name}.farthest_node": torch.tensor(encoded.farthest, dtype=torch.float32),
            f"{name}.original_shape": torch.tensor(value.shape),
        })
        expected[name] = codec.decode(encoded)
    path = tmp_path / "hyper_model.safetensors"
    save_file(tensors, str(path))
    imported = read_reference(path, model_type="tiny")
    assert len(expected) >= 4
    for name, values in expected.items():
        module_path = name.rsplit(".", 1)[0]
        module = imported.model.get_submodule(module_path)
        got = module.decoded_weight() if isinstance(module, HyperLinear) else getattr(module, "weight")
        np.testing.assert_allclose(got.detach().numpy(), values, atol=1e-6)


def test_reference_layout_refuses_other_files(tmp_path):
    save_file({"x": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="rect_l"):
        read_reference(tmp_path / "other.safetensors")


def test_codec_settings_thread_through_compress_model_and_the_cli(tmp_path, tiny_checkpoint):
    settings = Settings(codebook_sizes=(2025,), max_rings=2)
    compressed = compress_model(build_sam("tiny", seed=0), settings=settings, show_progress=False)
    assert compressed.settings == settings
    coded = [e.encoded for e in compressed.entries.values() if e.encoded is not None]
    assert coded and all(e.codebook_size == 2025 and e.rings <= 2 for e in coded)
    unit = compress_model(build_sam("tiny", seed=0), "scaled", unit_rms=0.05, show_progress=False)
    assert unit.settings == Settings(unit_rms=0.05)
    out = tmp_path / "tiny.birkhoff.safetensors"
    assert birkhoff_main([str(tiny_checkpoint), "--out", str(out), "--fill-bits", "8", "13",
                          "--target-mae", "7e-4", "--fallback-rel-rmse", "none", "--no-plot"]) == 0
    expected = Settings(fill_bits=(8, 13), target_mae=7e-4, fallback_rel_rmse=None)
    assert Settings.from_dict(json.loads(read_checkpoint_metadata(out)[SETTINGS_KEY])) == expected
    report = json.loads(out.with_name(out.name + ".report.json").read_text())
    assert Settings.from_dict(report["settings"]) == expected
    assert sum(isinstance(m, HyperLinear) for m in load_checkpoint(out).modules()) > 0
    assert birkhoff_main([str(tiny_checkpoint), "--out", str(tmp_path / "bad.safetensors"),
                          "--codebook-sizes", "1000"]) == 2  # not a square: refused before any work


def _outlier_weight(rng, shape, scale=0.01, fraction=2e-3, magnitude=3.0):
    weight = rng.normal(0, scale, shape)
    count = max(1, int(weight.size * fraction))
    weight.reshape(-1)[rng.choice(weight.size, count, replace=False)] = magnitude * rng.choice([-1, 1], count)
    return weight


@pytest.mark.parametrize("variant", ["reference", "scaled"])
def test_the_relative_fall_back_triggers_on_outliers_not_on_gaussians(variant):
    rng = np.random.default_rng(8)
    limit = Settings(fallback_rel_rmse=0.2)
    gaussian = rng.normal(0, 0.02, (128, 512))
    outliers = _outlier_weight(rng, (128, 512))
    assert encode_tensor(gaussian, True, variant, settings=limit) is not None
    assert encode_tensor(outliers, True, variant, settings=limit) is None
    assert encode_tensor(outliers, True, variant, settings=limit.replace(fallback_rel_rmse=None)) is not None


def test_the_fall_back_keeps_the_model_error_bounded():
    model = build_sam("tiny", seed=0)
    name = "image_encoder.blocks.0.mlp.lin1.weight"
    weight = _outlier_weight(np.random.default_rng(0), (128, 32))
    with torch.no_grad():
        model.get_parameter(name).copy_(torch.from_numpy(weight))
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.image_encoder(image)
    on = compress_model(copy.deepcopy(model), settings=Settings(fallback_rel_rmse=0.2), show_progress=False)
    off = compress_model(copy.deepcopy(model), settings=Settings(fallback_rel_rmse=None), show_progress=False)
    entry = on.entries[name]
    assert entry.role == RAW and entry.fell_back and entry.fall_back_reason == FELL_BACK_REL
    assert entry.robust_rel_rmse > 0.2 and off.entries[name].role == HYPER_LINEAR
    assert build_report(on, None, 1)["fell_back_by_relative_error"] == [name]
    for other, e in on.entries.items():  # the limit touched that tensor only
        if other != name and e.encoded is not None:
            np.testing.assert_array_equal(e.encoded.indices, off.entries[other].encoded.indices)
    with torch.no_grad():
        errors = [float((c.model.image_encoder(image) - expected).norm() / expected.norm()) for c in (on, off)]
    assert errors[0] <= errors[1] and errors[0] < 0.1


def test_reference_variant_codes_a_tiny_magnitude_tensor_in_units_not_raw():
    """The authors' absolute square is far too coarse for a tensor of std 3e-4 (SlimSAM-77's
    seeded pos_embed): samedge's relative fall-back codes it in its own unit instead."""
    model = build_sam("tiny", seed=0)
    with torch.no_grad():
        model.image_encoder.pos_embed.normal_(0, 3e-4)
    compressed = compress_model(model, "reference", show_progress=False)
    entry = compressed.entries["image_encoder.pos_embed"]
    assert entry.role == DECODE_AT_LOAD and entry.encoded.scale is not None and entry.rel_rmse < 0.1
    linear = compressed.entries["image_encoder.blocks.0.mlp.lin1.weight"]
    assert linear.encoded.scale is None  # everything else keeps the authors' codes
