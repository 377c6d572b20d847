"""The numpy/Pillow pre-processing must give segment_anything's exact model input."""

import numpy as np
import pytest
import torch

from compress import build_sam
from runtime.transforms import preprocess, scale_coords


@pytest.mark.parametrize("shape", [(37, 91), (91, 37), (64, 64), (300, 451), (1, 5)])
def test_preprocess_matches_sam_predictor(shape):
    from segment_anything import SamPredictor

    model = build_sam("tiny", seed=0)
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    predictor = SamPredictor(model)
    resized = predictor.transform.apply_image(image)
    expected = model.preprocess(torch.as_tensor(resized).permute(2, 0, 1)[None].float())
    ours = preprocess(image, model.image_encoder.img_size, model.config.pixel_mean, model.config.pixel_std)
    np.testing.assert_allclose(ours, expected.numpy(), rtol=0, atol=1e-5)


def test_coordinates_match_sam_transform():
    from segment_anything.utils.transforms import ResizeLongestSide

    coords = np.array([[0.0, 0.0], [91.0, 37.0], [12.5, 30.25]])
    expected = ResizeLongestSide(1024).apply_coords(coords, (37, 91))
    np.testing.assert_allclose(scale_coords(coords, (37, 91), 1024), expected, rtol=1e-6)
