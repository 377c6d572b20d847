"""SAM 2.1's memory pieces (compress/families/sam2_memory.py) against sam2's own modules, in torch and in ONNX.

A 256-px hiera-t (16 x 16 feature grid) with seeded random weights, perturbed per tensor so the
four cloned memory-attention layers differ (get_clones makes them identical at init, which
would hide a layer-order bug).
"""

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

pytest.importorskip("sam2")
from sam2.build_sam import build_sam2  # noqa: E402

from compress.families.sam2_memory import MemoryAttentionPiece, MemoryEncoderPiece  # noqa: E402

SMALL_SAM21 = [
    "++model.image_size=256",
    "++model.memory_attention.layer.self_attention.feat_sizes=[16,16]",
    "++model.memory_attention.layer.cross_attention.feat_sizes=[16,16]",
]
# Largest difference allowed, as a fraction of the expected output's largest magnitude.
TORCH_TOLERANCE = 1e-5
ONNX_TOLERANCE = 1e-4
# (memory frames S, pointer tokens K): one conditioning frame alone up to the full 7 frames and 16 pointers
# (4 tokens each); K = 1 and K = 0 are not what tracking produces, but the file takes them.
MEMORY_SIZES = [(1, 4), (2, 8), (7, 16), (7, 64), (3, 1), (2, 0)]


@pytest.fixture(scope="module")
def sam2_model():
    with torch.random.fork_rng():  # sam2 initialises from the global generator: seed it, then restore it
        torch.manual_seed(0)
        model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu", hydra_overrides_extra=SMALL_SAM21)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            # Zero-initialised tensors (no_obj_embed_spatial) and LayerNorm weights (all 1) have no spread.
            spread = param.std() if param.numel() > 1 and param.std() > 0 else 1.0
            param += 0.02 * torch.randn(param.shape, generator=generator) * spread
    return model.eval()


def relative_error(got, expected) -> float:
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def original_memory_attention(model, curr, curr_pos, spatial, spatial_pos, ptrs, ptrs_pos):
    """sam2's MemoryAttention (complex RoPE) as the video predictor calls it."""
    with torch.no_grad():
        return model.memory_attention(curr=curr, memory=torch.cat((spatial, ptrs)), curr_pos=curr_pos,
                                      memory_pos=torch.cat((spatial_pos, ptrs_pos)),
                                      num_obj_ptr_tokens=ptrs.shape[0])


def export(piece, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic
        torch.onnx.export(piece, piece.dummy_inputs(), str(path), input_names=list(piece.INPUT_NAMES),
                          output_names=list(piece.OUTPUT_NAMES), dynamic_axes=piece.DYNAMIC_AXES,
                          opset_version=17, do_constant_folding=True, dynamo=False)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(session, piece, inputs):
    return session.run(None, {name: t.numpy() for name, t in zip(piece.INPUT_NAMES, inputs, strict=True)})


@pytest.fixture(scope="module")
def attention_piece(sam2_model):
    return MemoryAttentionPiece(sam2_model).eval()


@pytest.fixture(scope="module")
def attention_onnx(attention_piece, tmp_path_factory):
    path = tmp_path_factory.mktemp("sam2_memory") / "memory_attention.onnx"
    return path, export(attention_piece, path)


@pytest.mark.parametrize(("frames", "pointers"), MEMORY_SIZES)
def test_real_rope_attention_matches_the_complex_original(sam2_model, attention_piece, frames, pointers):
    inputs = attention_piece.dummy_inputs(frames, pointers)
    with torch.no_grad():
        got = attention_piece(*inputs)
    expected = original_memory_attention(sam2_model, *inputs)
    assert got.shape == expected.shape == (16 * 16, 1, 256)
    assert relative_error(got, expected) <= TORCH_TOLERANCE


def swap_rope_tables(piece):
    piece.rope_cos, piece.rope_sin = piece.rope_sin, piece.rope_cos


def reverse_layers(piece):
    piece.layers = nn.ModuleList(list(piece.layers)[::-1])


@pytest.mark.parametrize("breakage", [swap_rope_tables, reverse_layers])
def test_a_broken_piece_fails_the_comparison(sam2_model, breakage):
    piece = MemoryAttentionPiece(sam2_model).eval()
    breakage(piece)
    inputs = piece.dummy_inputs(2, 8)
    with torch.no_grad():
        got = piece(*inputs)
    assert relative_error(got, original_memory_attention(sam2_model, *inputs)) > 100 * ONNX_TOLERANCE


def test_one_onnx_file_takes_any_number_of_memory_frames_and_pointers(sam2_model, attention_piece, attention_onnx):
    _, session = attention_onnx
    for frames, pointers in MEMORY_SIZES:
        inputs = attention_piece.dummy_inputs(frames, pointers)
        (got,) = run_onnx(session, attention_piece, inputs)
        assert relative_error(got, original_memory_attention(sam2_model, *inputs)) <= ONNX_TOLERANCE, (frames, pointers)


def test_the_onnx_file_holds_the_rope_tables_once(attention_piece, attention_onnx):
    path, _ = attention_onnx
    cos, sin = attention_piece.rope_cos.numpy(), attention_piece.rope_sin.numpy()
    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]

    def copies(table):  # in any shape the exporter may have folded it to
        return sum(a.size == table.size and np.array_equal(a.reshape(table.shape), table) for a in arrays)

    assert (copies(cos), copies(sin)) == (1, 1)
    weights = sum(p.numel() for p in attention_piece.parameters()) * 4
    assert path.stat().st_size < weights * 1.02 + cos.nbytes + sin.nbytes  # 8 attentions' copies: +56%


def encoder_inputs(object_score: float, binarized: bool):
    """Raw level-2 features, high-res mask logits and what the caller passes for them."""
    generator = torch.Generator().manual_seed(3)
    pix_feat = torch.randn(1, 256, 16, 16, generator=generator)
    logits = 8 * torch.randn(1, 1, 256, 256, generator=generator)
    mask_probs = (logits > 0).float() if binarized else torch.sigmoid(logits)
    return pix_feat, logits, mask_probs, torch.tensor([[object_score]])


def original_encode_new_memory(model, pix_feat, logits, object_score_logits, binarized: bool):
    model.binarize_mask_from_pts_for_mem_enc = True  # as build_sam2_video_predictor sets it
    seq_first = pix_feat.flatten(2).permute(2, 0, 1)  # [HW, 1, 256], how sam2 keeps vision features
    with torch.no_grad():
        features, pos_enc = model._encode_new_memory([seq_first], [(16, 16)], logits, object_score_logits,
                                                     is_mask_from_pts=binarized)
    return features, pos_enc[0]


CASES = [(2.0, False), (-2.0, False), (2.0, True), (-0.5, True)]  # object present / occluded, clicked or tracked


@pytest.mark.parametrize(("object_score", "binarized"), CASES)
def test_memory_encoder_matches_encode_new_memory(sam2_model, object_score, binarized):
    piece = MemoryEncoderPiece(sam2_model).eval()
    pix_feat, logits, mask_probs, score = encoder_inputs(object_score, binarized)
    with torch.no_grad():
        got = piece(pix_feat, mask_probs, score)
    expected = original_encode_new_memory(sam2_model, pix_feat, logits, score, binarized)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape == (1, 64, 16, 16)
        assert relative_error(g, e) <= TORCH_TOLERANCE


def test_the_memory_encoder_onnx_matches_encode_new_memory(sam2_model, tmp_path):
    piece = MemoryEncoderPiece(sam2_model).eval()
    session = export(piece, tmp_path / "memory_encoder.onnx")
    occluded_difference = 0.0
    for object_score, binarized in CASES:
        pix_feat, logits, mask_probs, score = encoder_inputs(object_score, binarized)
        got = run_onnx(session, piece, (pix_feat, mask_probs, score))
        expected = original_encode_new_memory(sam2_model, pix_feat, logits, score, binarized)
        for g, e in zip(got, expected, strict=True):
            assert relative_error(g, e) <= ONNX_TOLERANCE, (object_score, binarized)
        if object_score < 0:  # the no-object embedding is in the graph, not folded for the traced score
            present = original_encode_new_memory(sam2_model, pix_feat, logits, -score, binarized)[0]
            occluded_difference = max(occluded_difference, relative_error(got[0], present))
    assert occluded_difference > 100 * ONNX_TOLERANCE
