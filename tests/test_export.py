"""The ONNX files: valid, with the official SAM decoder signature, usable by plain ORT."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from segment_anything.utils.transforms import ResizeLongestSide

from runtime import Session

# Written out here, not imported: the test pins the signature of SAM's own ONNX example.
OFFICIAL_INPUTS = (
    "image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size",
)


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", ["encoder.onnx", "decoder.onnx", "decoder_single.onnx"])
def test_files_pass_the_full_checker(tiny_bundle, name):
    onnx.checker.check_model(str(tiny_bundle / name), full_check=True)


@pytest.mark.parametrize("name", ["decoder.onnx", "decoder_single.onnx"])
def test_decoder_has_the_official_signature(tiny_bundle, name):
    model = onnx.load(str(tiny_bundle / name))
    assert model.opset_import[0].version == 17
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == list(OFFICIAL_INPUTS)
    grid, embed = 8, 32  # tiny: 64 px / patch 8, prompt dim 32
    expected_shapes = {
        "image_embeddings": [1, embed, grid, grid], "point_coords": [1, "num_points", 2],
        "point_labels": [1, "num_points"], "mask_input": [1, 1, 4 * grid, 4 * grid],
        "has_mask_input": [1], "orig_im_size": [2],
    }
    for input_name, shape in expected_shapes.items():
        assert inputs[input_name].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert _dims(inputs[input_name]) == shape, input_name
    assert [o.name for o in model.graph.output] == ["masks", "iou_predictions", "low_res_masks"]


def _official_inputs(session, image_hw, points, labels):
    """The input dictionary exactly as SAM's ONNX example notebook builds it."""
    coords = np.concatenate([np.array(points), np.array([[0.0, 0.0]])])[None]
    return {
        "image_embeddings": session.image_embedding,
        "point_coords": ResizeLongestSide(session.img_size).apply_coords(coords, image_hw).astype(np.float32),
        "point_labels": np.concatenate([np.array(labels, np.float32), [-1.0]])[None].astype(np.float32),
        "mask_input": np.zeros((1, 1, session.low_res_size, session.low_res_size), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array(image_hw, np.float32),
    }


def test_plain_onnxruntime_with_the_official_inputs_gives_session_masks(demo_bundle, photos):
    image = photos["coffee"]  # 400 x 600: a crop different from the export example's
    session = Session(demo_bundle, backend="onnxruntime")
    session.set_image(image)
    points, labels = [[300.0, 200.0], [120.0, 90.0]], [1, 0]
    ours = session.predict(points=points, labels=labels)
    plain = ort.InferenceSession(str(demo_bundle / "decoder.onnx"), providers=["CPUExecutionProvider"])
    masks, scores, low_res = plain.run(None, _official_inputs(session, image.shape[:2], points, labels))
    assert masks.shape == (1, 4, 400, 600) and scores.shape == (1, 4) and low_res.shape == (1, 4, 64, 64)
    assert np.array_equal(masks[0, 1:] > 0.0, ours.masks)
    np.testing.assert_array_equal(scores[0, 1:], ours.scores)


def test_single_mask_decoder_returns_one_mask_for_any_point_count(tiny_bundle):
    session = Session(tiny_bundle)
    session.set_image(np.full((50, 70, 3), 128, np.uint8))
    decoder = ort.InferenceSession(str(tiny_bundle / "decoder_single.onnx"))
    for count in (1, 3, 9):
        points = [[5.0 + i, 7.0 + i] for i in range(count)]
        masks, scores, low_res = decoder.run(None, _official_inputs(session, (50, 70), points, [1] * count))
        assert masks.shape == (1, 1, 50, 70) and scores.shape == (1, 1) and low_res.shape == (1, 1, 32, 32)
