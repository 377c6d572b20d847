"""Global attention exported in bands of query rows: the same numbers as segment_anything's."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from compress import build_sam
from compress.slimsam.attention import split_attention
from compress.families.sam_attention import banded_forward, banded_global_attention
from export.onnx_export import export_module


@pytest.fixture()
def tiny_encoder():
    return build_sam("tiny", seed=0).eval().image_encoder  # 8 x 8 token grid, block 1 global


@pytest.mark.parametrize("layout", ["fused qkv", "split q/k/v"])
@pytest.mark.parametrize("rows", [1, 3, 8])  # 3: the last band is shorter (8 = 3 + 3 + 2)
def test_bands_compute_what_the_whole_attention_computes(tiny_encoder, layout, rows):
    if layout == "split q/k/v":
        split_attention(tiny_encoder)
    attn = tiny_encoder.blocks[1].attn
    x = torch.randn(1, 8, 8, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        np.testing.assert_allclose(banded_forward(attn, x, rows).numpy(), attn(x).numpy(), rtol=0, atol=1e-6)


def test_the_banded_onnx_encoder_matches_pytorch_and_the_patch_is_undone(tiny_encoder, tmp_path):
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = tiny_encoder(pixels).numpy()
        with banded_global_attention(tiny_encoder, chunk_tokens=24) as encoder:  # 3 rows per band
            assert "forward" in vars(encoder.blocks[1].attn) and "forward" not in vars(encoder.blocks[0].attn)
            export_module(encoder, (pixels,), tmp_path / "e.onnx", ["image"], ["image_embeddings"])
    assert "forward" not in vars(tiny_encoder.blocks[1].attn)
    session = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": pixels.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    softmaxes = [n for n in onnx.load(str(tmp_path / "e.onnx")).graph.node if n.op_type == "Softmax"]
    assert len(softmaxes) == 1 + 3  # the windowed block's one, the global block's three bands


def test_bands_hold_vit_b_s_score_bytes_whatever_the_head_count():
    from compress.families.sam_attention import SCORE_BAND_BYTES, band_tokens

    assert band_tokens(12, 4096) == 512  # vit_b (and SlimSAM-77's 12 heads of 14): unchanged
    assert band_tokens(3, 4096) == 2048  # SlimSAM-77 whole heads: 3 x 2048 x 4096 floats, the same 100 MB
    assert 4 * 3 * band_tokens(3, 4096) * 4096 == SCORE_BAND_BYTES
    assert band_tokens(16, 4096) == 512  # vit_l / vit_h: never narrower than 512 queries
