"""Birkhoff at model level: HyperLinear, compress_model, our checkpoint format, the scaled variant."""

import numpy as np
import pytest
import torch
from torch import nn

from compress import CheckpointError, build_sam, load_checkpoint
from compress.birkhoff import codec, scaled
from compress.birkhoff.hyper_linear import HyperLinear, pack_words, unpack_words
from compress.birkhoff.model import DECODE_AT_LOAD, HYPER_LINEAR, RAW, compress_model
from compress.birkhoff.storage import load_compressed, save_compressed


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


def test_code_words_round_trip_with_odd_pair_counts():
    indices = np.random.default_rng(1).integers(0, 6400, (7 * 5,))
    words = pack_words(indices, 7)
    assert words.shape == (7, 3) and words.dtype == np.int32 and words.min() >= 0
    np.testing.assert_array_equal(unpack_words(torch.from_numpy(words), 5).numpy().reshape(-1), indices)


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
    from compress import save_checkpoint

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
    from safetensors.torch import load_file, save_file

    from compress.checkpoint import read_checkpoint_metadata

    compressed = compress_model(build_sam("tiny", seed=0), show_progress=False)
    path = tmp_path / "c.safetensors"
    save_compressed(compressed, path)
    tensors = load_file(str(path))
    name = next(k for k in tensors if k.endswith(".codes"))
    tensors[name] = tensors[name][:-1]  # one byte short
    save_file(tensors, str(path), metadata=read_checkpoint_metadata(path))
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)


def test_non_finite_weights_are_refused_by_name():
    model = build_sam("tiny", seed=0)
    with torch.no_grad():
        model.image_encoder.blocks[0].mlp.lin1.weight[0, 0] = float("nan")
    with pytest.raises(codec.CodecError, match="blocks.0.mlp.lin1.weight: .*NaN"):
        compress_model(model, show_progress=False)
