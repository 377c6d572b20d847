import numpy as np
import pytest
from PIL import Image

from runtime import ImageError, load_image


def test_rgb_uint8_passes_through():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(load_image(image), image)


def test_greyscale_becomes_three_equal_channels():
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7)
    out = load_image(grey)
    assert out.shape == (5, 7, 3) and all(np.array_equal(out[..., c], grey) for c in range(3))
    assert np.array_equal(load_image(Image.fromarray(grey)), out)


def test_rgba_drops_alpha():
    rgba = np.random.default_rng(1).integers(0, 256, (4, 4, 4), dtype=np.uint8)
    assert np.array_equal(load_image(rgba), rgba[..., :3])
    assert np.array_equal(load_image(Image.fromarray(rgba, "RGBA")), rgba[..., :3])


def test_sixteen_bit_scales_to_eight(tmp_path):
    values = np.array([[0, 257, 65535], [32896, 1000, 65280]], dtype=np.uint16)
    expected = np.array([[0, 1, 255], [128, 4, 254]], dtype=np.uint8)
    assert np.array_equal(load_image(values)[..., 0], expected)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # a real 16-bit greyscale PNG
    assert np.array_equal(load_image(path)[..., 1], expected)


def test_float_images_are_refused_with_the_fix():
    with pytest.raises(ImageError, match="astype\\(np.uint8\\)"):
        load_image(np.zeros((4, 4, 3), np.float32))


def test_bad_shapes_files_and_types(tmp_path):
    with pytest.raises(ImageError, match="channels-first"):
        load_image(np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(ImageError, match="not \\[H, W\\]"):
        load_image(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(broken)
    with pytest.raises(ImageError, match="cannot read an image from list"):
        load_image([[1, 2, 3]])


def test_wide_integer_arrays_are_accepted_only_when_unambiguous():
    small = np.array([[[0, 128, 255]]], dtype=np.int64)  # what np.array(list) gives
    assert np.array_equal(load_image(small), small.astype(np.uint8))
    with pytest.raises(ImageError, match="astype\\(np.uint16\\)"):
        load_image(np.array([[[0, 1000, 255]]], dtype=np.int64))
    with pytest.raises(ImageError, match="outside 0..255"):
        load_image(np.array([[[-1, 0, 0]]], dtype=np.int32))


def test_exif_rotation_is_applied(tmp_path):
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise for display
    Image.new("RGB", (40, 20), (200, 10, 10)).save(path, exif=exif)
    assert load_image(path).shape == (40, 20, 3)
