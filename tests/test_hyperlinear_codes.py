"""The one code layout (plugins/hyperlinear/spec.py) and its decoders, bit for bit.

numpy's reference (plugins/hyperlinear/reference.py) against the spec's words written out
by hand, the torch module, the checkpoint and its older uint8 layout. The ONNX function
bodies are held to the same bits in tests/test_birkhoff_onnx.py, the kernel's host decode
in tests/test_hyperlinear_kernel.py."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from compress import build_sam, load_checkpoint
from compress.birkhoff import codec
from compress.birkhoff.hyper_linear import HyperLinear, unpack_codes
from compress.birkhoff.model import CODED_TENSORS, compress_model
from compress.birkhoff.packing import pack_indices
from compress.birkhoff.storage import save_compressed
from compress.checkpoint_file import read_checkpoint_metadata
from plugins.hyperlinear import reference, spec


def test_words_hold_the_stream_least_significant_bit_first():
    # 3 indices of 12 bits: bits 0-11, 12-23 of word 0, then 24-31 of word 0 and 0-3 of word 1.
    words = reference.pack(np.array([0xABC, 0x123, 0xFED]), 12)
    assert words.dtype == np.dtype(spec.CODES_DTYPE) and words.size == 2
    unsigned = words.view(np.uint32)
    assert unsigned[0] == 0xABC | 0x123 << 12 | (0xFED & 0xFF) << 24
    assert unsigned[1] == 0xFED >> 8
    assert words[0] < 0  # the top word's sign bit is a data bit: readers take words unsigned


@pytest.mark.parametrize("bits", [1, 7, 11, 12, 13, 16])
@pytest.mark.parametrize("count", [0, 1, 31, 32, 33, 1000])
def test_pack_and_both_unpacks_agree(bits, count):
    indices = np.random.default_rng(bits * 1000 + count).integers(0, 1 << bits, count)
    words = reference.pack(indices, bits)
    assert words.size == reference.word_count(count, bits) == -(-count * bits // 32)
    np.testing.assert_array_equal(reference.unpack(words, count, bits), indices)
    np.testing.assert_array_equal(unpack_codes(torch.from_numpy(words), count, bits).numpy(), indices)


def test_bad_codes_are_refused():
    with pytest.raises(ValueError, match="lie in"):
        reference.pack(np.array([8]), 3)
    with pytest.raises(ValueError, match="index_bits"):
        reference.pack(np.array([1]), 17)
    with pytest.raises(ValueError, match="need"):
        reference.unpack(np.zeros(3, np.int32), 10, 12)
    table = reference.pair_table(1225, 35, 0.1, [0.0, 0.0], [1.0])
    words = reference.pack(np.array([0, 1225]), 11)  # ring 1 of a table with none
    with pytest.raises(ValueError, match="damaged"):
        reference.decode_linear(words, np.ones(1, np.float32), in_features=4, out_features=1, codebook_size=1225,
                                lattice_side=35, index_bits=11, side=0.1, center=[0, 0], gains=[1.0])
    assert table.shape == (1225, 2)


@pytest.mark.parametrize("in_features", [96, 33, 2])
@pytest.mark.parametrize("scale", [None, "rows"])
def test_torch_decode_equals_the_numpy_reference_bit_for_bit(in_features, scale):
    rng = np.random.default_rng(in_features)
    weight = rng.normal(0, 0.03, (24, in_features)) * (rng.uniform(0.5, 2, (24, 1)) if scale else 1)
    encoded = codec.encode(weight, row_pairs=True)
    if scale:
        encoded.scale = rng.uniform(0.5, 2, 24).astype(np.float32).astype(np.float64)
    layer = HyperLinear.from_encoded(encoded)
    expected = reference.decode_linear(
        layer.codes.numpy(), layer.row_scale.numpy(), in_features=in_features, out_features=24,
        codebook_size=layer.codebook_size, lattice_side=codec.lattice_side(layer.codebook_size),
        index_bits=layer.index_bits, side=layer.side, center=layer.center, gains=layer.gains)
    assert layer.codes.numel() == -(-24 * ((in_features + 1) // 2) * encoded.bits // 32)
    np.testing.assert_array_equal(layer.decoded_weight().numpy().view(np.int32), expected.view(np.int32))
    # ... and the float64 codec to float32 rounding
    np.testing.assert_allclose(expected, codec.decode(encoded), rtol=0, atol=1e-6)


def test_model_holds_what_the_checkpoint_decodes(tmp_path):
    """Decode-at-load tensors: the float32 table decode, the same bits after a reload."""
    compressed = compress_model(build_sam("tiny", seed=0), show_progress=False)
    path = tmp_path / "c.safetensors"
    save_compressed(compressed, path)
    codes = {k: v for k, v in load_file(str(path)).items() if k.endswith(".codes")}
    assert codes and all(v.dtype == torch.int32 for v in codes.values())
    reloaded = load_checkpoint(path)
    coded = getattr(reloaded, CODED_TENSORS)
    assert coded and coded.keys() == getattr(compressed.model, CODED_TENSORS).keys()
    state, original = reloaded.state_dict(), compressed.model.state_dict()
    for name in coded:
        assert torch.equal(state[name], original[name]), name


def test_checkpoints_in_the_older_byte_layout_still_load(tmp_path):
    compressed = compress_model(build_sam("tiny", seed=0), show_progress=False)
    path = tmp_path / "c.safetensors"
    save_compressed(compressed, path)
    tensors, metadata = load_file(str(path)), read_checkpoint_metadata(path)
    for name, entry in compressed.entries.items():
        if entry.encoded is not None:  # what samedge wrote before the shared layout
            tensors[name + ".codes"] = torch.from_numpy(pack_indices(entry.encoded.indices, entry.encoded.bits))
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata=metadata)
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(old).image_encoder(image), load_checkpoint(path).image_encoder(image))
