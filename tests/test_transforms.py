"""The numpy/Pillow pre-processing must give segment_anything's exact model input."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.utils.transforms import ResizeLongestSide

from compress import build_sam
from runtime import ImageError
from runtime.transforms import preprocess, resized_shape, scale_coords


# (1, 128): the most elongated image the tiny model's 64-px input takes (short side 1 px).
@pytest.mark.parametrize("shape", [(37, 91), (91, 37), (64, 64), (300, 451), (1, 5), (1, 128)])
def test_preprocess_matches_sam_predictor(shape):
    model = build_sam("tiny", seed=0)
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    predictor = SamPredictor(model)
    resized = predictor.transform.apply_image(image)
    expected = model.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float())
    ours = preprocess(image, model.image_encoder.img_size, model.config.pixel_mean, model.config.pixel_std)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=0, atol=1e-5)


def test_coordinates_match_sam_transform():
    coords = np.array([[0.0, 0.0], [91.0, 37.0], [12.5, 30.25]])
    expected = ResizeLongestSide(1024).apply_coords(coords, (37, 91))
    np.testing.assert_allclose(scale_coords(coords, (37, 91), 1024), expected, rtol=1e-6)


@pytest.mark.parametrize("height, width, needed", [(1, 5000, 3), (5000, 2, 3), (1, 2049, 2)])
def test_too_elongated_images_name_the_short_side_they_need(height, width, needed):
    message = (f"a {width}x{height} image is too elongated for the model's 1024-px input: its short side "
               f"would shrink to 0 px; crop it, or pad its short side to at least {needed} px")
    with pytest.raises(ImageError, match=message):
        preprocess(np.zeros((height, width, 3), np.uint8), 1024, (0, 0, 0), (1, 1, 1))
    with pytest.raises(ImageError, match=message):  # prompts are scaled with the same shape
        scale_coords(np.zeros((1, 2)), (height, width), 1024)
    padded = (needed, width) if height < width else (height, needed)
    assert min(resized_shape(*padded, 1024)) == 1


def test_a_short_side_of_exactly_half_a_pixel_rounds_up():
    assert resized_shape(3, 6144, 1024) == (1, 1024)
