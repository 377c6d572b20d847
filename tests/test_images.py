import os
import re
import struct
import zlib

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


RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
PALETTE = [RED, GREEN, (10, 20, 30)]
SIXTEEN_BIT = [0, 257, 32896, 65535]  # as uint16 arrays: 0, 1, 128, 255


def _grey(*values):
    return [(v, v, v) for v in values]


# Every Pillow mode: one row of raw pixels -> the RGB it shows (None: refused). Colour spaces go
# through Pillow's conversion.
PIL_MODES = {
    "1": ([True, False], [WHITE, BLACK]),
    "L": ([0, 77, 255], _grey(0, 77, 255)),
    "LA": ([(77, 0), (200, 128), (255, 255)], _grey(77, 200, 255)),
    "La": ([(100, 128), (200, 255), (0, 0)], _grey(199, 200, 0)),  # grey premultiplied by alpha
    "P": ([0, 1, 2], PALETTE),
    "PA": ([(0, 255), (1, 128), (2, 0)], PALETTE),
    "RGB": ([RED, (10, 20, 30)], [RED, (10, 20, 30)]),
    "RGBA": ([(200, 100, 50, 0), (1, 2, 3, 255)], [(200, 100, 50), (1, 2, 3)]),
    "RGBa": ([(100, 50, 25, 128), (200, 100, 50, 255)], [(199, 99, 49), (200, 100, 50)]),
    "RGBX": ([(200, 100, 50, 7), (1, 2, 3, 0)], [(200, 100, 50), (1, 2, 3)]),
    "CMYK": ([(0, 255, 255, 0), (0, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 128)],
             [RED, WHITE, BLACK, (127, 127, 127)]),
    "YCbCr": ([(76, 85, 255), (128, 128, 128), (255, 128, 128)], [RED, (128, 128, 128), WHITE]),
    "HSV": ([(0, 255, 255), (85, 255, 255), (170, 255, 255), (0, 0, 128)],
            [RED, GREEN, BLUE, (128, 128, 128)]),
    # CIELab as TIFF stores it: L scaled to 0..255, a and b signed bytes.
    "LAB": ([(136, 80, 67), (137, 0, 0), (255, 0, 0), (0, 0, 0)],
            [RED, (128, 128, 128), WHITE, BLACK]),
    "I": (SIXTEEN_BIT, _grey(0, 1, 128, 255)),
    "I;16": (SIXTEEN_BIT, _grey(0, 1, 128, 255)),
    "I;16L": (SIXTEEN_BIT, _grey(0, 1, 128, 255)),
    "I;16B": (SIXTEEN_BIT, _grey(0, 1, 128, 255)),
    "I;16N": (SIXTEEN_BIT, _grey(0, 1, 128, 255)),
    "F": ([0.0, 0.5, 1.0], None),  # as float arrays are
}
RAW_DTYPES = {"1": bool, "I": "=i4", "I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "F": "=f4"}
TOLERANCES = {"YCbCr": 1, "LAB": 12}  # Pillow's LAB conversion is off by up to ~11 for saturated colours


def _pil_image(mode: str, row: list) -> Image.Image:
    """A PIL image of `mode` holding exactly these raw pixel values."""
    pixels = np.array([row], RAW_DTYPES.get(mode, np.uint8))
    if mode == "1":  # Pillow stores it bit-packed
        return Image.fromarray(pixels)
    image = Image.frombytes(mode, (pixels.shape[1], 1), pixels.tobytes())
    if mode in ("P", "PA"):
        image.putpalette(np.ravel(PALETTE).tolist())
    return image


def test_the_mode_table_covers_every_pillow_mode():
    assert set(Image.MODES) <= set(PIL_MODES)


@pytest.mark.parametrize("mode", sorted(PIL_MODES))
def test_every_pil_mode_becomes_the_rgb_it_shows_or_is_refused(mode):
    row, expected = PIL_MODES[mode]
    image = _pil_image(mode, row)
    assert image.mode == mode
    if expected is None:
        with pytest.raises(ImageError, match="float32 pixels are not supported.*astype\\(np.uint8\\)"):
            load_image(image)
        return
    rgb = load_image(image)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, len(expected), 3)
    np.testing.assert_allclose(rgb[0].astype(int), np.array(expected), rtol=0, atol=TOLERANCES.get(mode, 0))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_arrays_are_refused_with_the_fix(dtype):
    with pytest.raises(ImageError, match=f"{np.dtype(dtype).name} pixels are not supported; pass uint8 RGB"):
        load_image(np.full((2, 2, 3), 0.5, dtype))


def test_float_pil_images_are_refused_as_the_same_array_is():
    pixels = np.full((2, 2), 0.5, np.float32)
    with pytest.raises(ImageError) as from_array:
        load_image(pixels)
    with pytest.raises(ImageError) as from_pil:
        load_image(Image.fromarray(pixels))  # mode "F"; it used to become all black
    assert str(from_pil.value) == str(from_array.value)


def test_bool_arrays_are_black_and_white_like_mode_1():
    mask = np.array([[True, False], [False, True]])
    out = load_image(mask)
    assert np.array_equal(out[..., 0], mask * 255) and np.array_equal(out, load_image(Image.fromarray(mask)))


def test_big_endian_sixteen_bit_arrays_scale_like_native_ones():
    values = np.array([[0, 257, 65535]], ">u2")
    assert np.array_equal(load_image(values)[0, :, 0], [0, 1, 255])


@pytest.mark.parametrize("array", [np.zeros((2, 2, 3), complex), np.zeros((2, 2, 3), object),
                                   np.full((2, 2), "x")])
def test_arrays_that_are_not_pixels_are_refused(array):
    with pytest.raises(ImageError, match=f"dtype {array.dtype} is not supported; pass a uint8 RGB array"):
        load_image(array)


@pytest.mark.parametrize("shape, fix", [
    ((8, 8, 2), "grey \\+ alpha pass array\\[..., 0\\]"),
    ((8, 8, 5), "array\\[..., :3\\] if the first three channels are RGB"),
    ((1, 8, 8, 3), "drop the batch axis: pass array\\[0\\]"),
])
def test_wrong_channel_counts_name_the_fix(shape, fix):
    with pytest.raises(ImageError, match=f"not \\[H, W\\], \\[H, W, 3\\] or \\[H, W, 4\\]; .*{fix}"):
        load_image(np.zeros(shape, np.uint8))


@pytest.mark.parametrize("image", [np.zeros((0, 5, 3), np.uint8), np.zeros((5, 0), np.uint8),
                                   Image.new("RGB", (0, 5)), Image.new("L", (5, 0))])
def test_empty_images_are_refused(image):
    with pytest.raises(ImageError, match="is empty; pass an image of at least 1x1 pixels"):
        load_image(image)


def test_strided_views_give_their_pixels_contiguously():
    image = np.random.default_rng(2).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    view = image[::-1, ::2, ::-1]  # flipped, every other column, BGR -> RGB
    out = load_image(view)
    assert out.flags.c_contiguous and np.array_equal(out, view)


def test_paths_that_are_not_image_files(tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="is a directory, not an image file; pass the path of one image in it"):
        load_image(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it to read would block forever
    with pytest.raises(ImageError, match="pipe is not a regular file.*pass the path of an image file"):
        load_image(fifo)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ImageError, match=f"missing.png does not exist \\(relative to {re.escape(str(tmp_path))}\\)"):
        load_image("missing.png")
    with pytest.raises(ImageError, match="is a URL; samedge reads local files, download it first"):
        load_image("https://example.com/photo.jpg")
    with pytest.raises(ImageError, match="embedded null byte"):
        load_image("photo\0.jpg")


def test_pasted_data_given_as_a_path_gives_a_short_message():
    with pytest.raises(ImageError, match="\\.\\.\\. \\(55000 characters\\) is not a usable file path") as refused:
        load_image("iVBORw0KGgo" * 5000)  # base64 of a PNG, say
    assert len(str(refused.value)) < 200


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_corrupt_and_huge_files_are_refused(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ImageError, match="truncated.png is not a readable image \\(image file is truncated"):
        load_image(truncated)
    with pytest.raises(ImageError, match="the PIL image cannot be decoded \\(image file is truncated"):
        load_image(Image.open(truncated))
    bad_header = tmp_path / "bad.ppm"
    bad_header.write_bytes(b"P6 " + b"9" * 20 + b" 1 255\n")  # Pillow: ValueError, token too long
    with pytest.raises(ImageError, match="bad.ppm is not a readable image"):
        load_image(bad_header)
    # A 100000 x 100000 PNG header: Pillow's guard against decompression bombs.
    bomb = tmp_path / "bomb.png"
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IEND", b""))
    with pytest.raises(ImageError, match="bomb.png is too large for Pillow's decompression-bomb guard.*"
                                         "raise PIL.Image.MAX_IMAGE_PIXELS"):
        load_image(bomb)


def test_pil_images_whose_file_is_gone(tmp_path):
    path = tmp_path / "photo.png"
    Image.new("RGB", (4, 4)).save(path)
    with Image.open(path) as lazy:
        pass  # never loaded: its pixels cannot be read any more
    with pytest.raises(ImageError, match="file was closed before its pixels were read; call image.load\\(\\)"):
        load_image(lazy)
    closed = Image.open(path)
    closed.load()
    closed.close()
    with pytest.raises(ImageError, match="cannot be decoded \\(Operation on closed image\\)"):
        load_image(closed)


def test_unreadable_exif_leaves_the_pixels_as_stored(tmp_path):
    pixels = np.random.default_rng(3).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    path = tmp_path / "bad-exif.png"
    Image.fromarray(pixels).save(path, exif=b"Exif\x00\x00XX\x00*\x00\x00\x00\x08")  # not a TIFF header
    assert np.array_equal(load_image(path), pixels)


# EXIF orientation -> how the stored pixels are turned for display (EXIF 2.3, tag 0x0112).
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_turns_the_pixels_as_shown(tmp_path, orientation):
    pixels = np.random.default_rng(4).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "turned.png"
    Image.fromarray(pixels).save(path, exif=exif)
    assert np.array_equal(load_image(path), ORIENTATIONS[orientation](pixels))


@pytest.mark.parametrize("suffix", [".gif", ".tif"])
def test_animations_and_multi_page_files_give_their_first_frame(tmp_path, suffix):
    frames = [Image.new("RGB", (4, 3), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / f"frames{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as opened:
        assert opened.n_frames == 2
    assert np.array_equal(load_image(path), np.full((3, 4, 3), (255, 0, 0), np.uint8))


def test_other_objects_name_the_accepted_kinds():
    with pytest.raises(ImageError, match="cannot read an image from bytes.*Image.open\\(io.BytesIO\\(data\\)\\)"):
        load_image(b"\x89PNG")
