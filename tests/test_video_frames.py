"""runtime/video_frames.py: folders, video files, arrays and streams give the same frames, in order, and
every bad input is refused with its frame and the fix."""

import random
import subprocess
import sys
import textwrap
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime import load_image
from runtime.video_frames import (FrameWarning, StreamFrame, VideoError, VideoFrames, frame_resize_square, open_stream,
                                  open_video, write_video)

REPO = Path(__file__).resolve().parent.parent
T, H, W = 12, 96, 128


def synthetic_frames(count: int = T, height: int = H, width: int = W) -> list[np.ndarray]:
    """A red box and a green disc moving over a smooth texture: what a codec keeps well."""
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([(x * 2) % 256, (y * 3) % 256, ((x + y) * 2) % 256], axis=-1).astype(np.uint8)
    frames = []
    for i in range(count):
        frame = background.copy()
        frame[20:50, 8 * i:8 * i + 30] = (230, 30, 30)
        frame[(y - 60) ** 2 + (x - 100 + 6 * i) ** 2 < 150] = (30, 220, 60)
        frames.append(frame)
    return frames


def write_folder(folder: Path, frames, names, suffix: str) -> Path:
    folder.mkdir()
    for frame, name in zip(frames, names, strict=True):
        Image.fromarray(frame).save(folder / f"{name}{suffix}")
    return folder


def write_with_pyav(path: Path, frames, codec="libx264", keyframe_every=3, container_format=None, rotation=None):
    """A video with keyframes every few frames and, for libx264, reordered (B) frames: what makes
    random access seek."""
    import av
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=10)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = keyframe_every
        if codec == "mpeg4":
            stream.codec_context.max_b_frames = 2
            stream.codec_context.qscale = True  # as write_video does: a steady picture quality
        if rotation:
            stream.set_display_rotation(rotation)
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def frames():
    return synthetic_frames()


@pytest.fixture
def av():
    return pytest.importorskip("av", reason="PyAV is not installed (pip install av)")


@pytest.fixture
def jpeg_folder(tmp_path, frames):
    return write_folder(tmp_path / "jpegs", frames, [str(i) for i in range(T)], ".jpg")


@pytest.fixture
def mp4(tmp_path, frames, av):
    return write_video(tmp_path / "clip.mp4", frames, fps=10)


# ---------------------------------------------------------------- folders

def test_jpeg_folder_integer_names_in_numeric_order_read_as_pil_does(jpeg_folder):
    video = open_video(jpeg_folder)
    assert (len(video), video.height, video.width) == (T, H, W)
    assert video.names == [str(i) for i in range(T)]  # 2 before 10, not "10" before "2"
    assert video.source == str(jpeg_folder)
    for i in range(T):
        expected = np.asarray(Image.open(jpeg_folder / f"{i}.jpg").convert("RGB"))
        assert video[i].dtype == np.uint8 and np.array_equal(video[i], expected)


def test_png_folder_is_lossless_and_sam2_zero_padded_names_keep_their_zeros(tmp_path, frames):
    folder = write_folder(tmp_path / "pngs", frames, [f"{i:05d}" for i in range(T)], ".png")
    video = open_video(folder)
    assert video.names == [f"{i:05d}" for i in range(T)]
    assert all(np.array_equal(video[i], frames[i]) for i in range(T))
    assert all(np.array_equal(a, b) for a, b in zip(video, frames, strict=True))


def test_other_names_sort_naturally_and_other_files_are_ignored(tmp_path, frames):
    folder = write_folder(tmp_path / "named", frames[:4], ["frame10", "frame2", "Frame1", "frame1b"], ".PNG")
    (folder / "notes.txt").write_text("not a frame")
    (folder / "._frame3.png").write_bytes(b"macOS AppleDouble, not an image")
    (folder / "sub.png").mkdir()
    video = open_video(folder)
    assert video.names == ["Frame1", "frame1b", "frame2", "frame10"]
    assert np.array_equal(video[3], frames[0])  # frame10 holds the first frame written


def test_two_files_with_one_frame_number_are_refused(tmp_path, frames):
    folder = write_folder(tmp_path / "twice", frames[:3], ["0", "1", "01"], ".png")
    with pytest.raises(VideoError, match="01.png and 1.png are both frame|1.png and 01.png are both frame"):
        open_video(folder)


def test_a_folder_reads_each_file_only_when_its_frame_is_asked_for(tmp_path, frames):
    folder = write_folder(tmp_path / "lazy", frames, [str(i) for i in range(T)], ".png")
    video = open_video(folder)
    Image.fromarray(frames[0]).save(folder / "5.png")  # changed after open: the read sees the new pixels
    assert np.array_equal(video[5], frames[0])


def test_exif_orientation_is_applied_as_load_image_does(tmp_path, frames):
    folder = tmp_path / "phone"
    folder.mkdir()
    for i in range(2):
        image = Image.fromarray(frames[i])
        exif = image.getexif()
        exif[0x0112] = 6  # stored sideways: shown turned 90 degrees clockwise
        image.save(folder / f"{i}.jpg", exif=exif)
    video = open_video(folder)
    assert (video.height, video.width) == (W, H)
    assert np.array_equal(video[1], load_image(folder / "1.jpg"))


# ---------------------------------------------------------------- arrays

def test_arrays_and_lists(frames):
    stacked = np.stack(frames)
    for source in (stacked, frames, tuple(frames)):
        video = open_video(source)
        assert (len(video), video.height, video.width) == (T, H, W)
        assert video.names[:2] == ["00000", "00001"]
        assert np.array_equal(video[7], frames[7])
    copy = open_video(stacked)[0]
    copy[:] = 0  # the caller's to draw on: the source is unchanged
    assert stacked[0].any()
    assert open_video(open_video(frames)) is not None


def test_bad_arrays_are_refused_with_the_fix(frames):
    cases = [
        (np.stack(frames).astype(np.float32) / 255, "dtype float32.*astype\\(np.uint8\\)"),
        (np.stack(frames)[..., 0], "not \\[T, H, W, 3\\]"),
        (frames[0], "one image, not a video.*array\\[None\\]"),
        (np.zeros((0, H, W, 3), np.uint8), "holds no frames"),
        ([], "holds no frames"),
        ([frames[0], frames[1][:50]], "list\\[1\\] is 128x50 but \\[0\\] is 128x96; resize every frame"),
        ([frames[0], np.moveaxis(frames[1], -1, 0)], "channels-first.*transpose"),
        ([frames[0], frames[1][..., :2]], "shape \\(96, 128, 2\\)"),
        (np.zeros((2, 0, W, 3), np.uint8), "holds no pixels"),
        (iter(frames), "use open_stream"),
        (42, "cannot read video frames from a int"),
    ]
    for source, message in cases:
        with pytest.raises(VideoError, match=message):
            open_video(source)


def test_indices_outside_the_video_name_the_range(frames):
    video = open_video(frames)
    with pytest.raises(IndexError, match="frame 12 is out of range: .* has frames 0..11"):
        video[T]
    with pytest.raises(IndexError, match="negative indices do not count from the end"):
        video[-1]
    with pytest.raises(TypeError, match="one at a time"):
        video[2:4]
    assert np.array_equal(video[np.int64(3)], frames[3])


# ---------------------------------------------------------------- video files

def test_mp4_written_by_write_video_reads_back(mp4, frames):
    with open_video(mp4) as video:
        assert (len(video), video.height, video.width) == (T, H, W)
        assert video.names == [f"{i:05d}" for i in range(T)]
        assert video.source == str(mp4)
        for i in range(T):
            assert np.abs(video[i].astype(int) - frames[i]).mean() < 8  # lossy, but the same picture


@pytest.mark.parametrize("kind", ["mp4 with B-frames", "mkv", "avi mpeg4", "raw h264 without timestamps"])
def test_the_same_index_gives_the_same_pixels_in_any_order(tmp_path, frames, av, kind):
    codec, suffix, container_format = {
        "mp4 with B-frames": ("libx264", ".mp4", None),
        "mkv": ("libx264", ".mkv", None),
        "avi mpeg4": ("mpeg4", ".avi", None),
        "raw h264 without timestamps": ("libx264", ".h264", "h264"),
    }[kind]
    path = write_with_pyav(tmp_path / f"clip{suffix}", frames, codec=codec, container_format=container_format)
    sequential = [frame for frame in open_video(path)]
    assert len(sequential) == T
    video = open_video(path)
    order = list(range(T)) * 2
    random.Random(0).shuffle(order)
    for i in order:
        assert np.array_equal(video[i], sequential[i]), (kind, i)
    assert all(np.abs(sequential[i].astype(int) - frames[i]).mean() < 8 for i in range(T))


def test_forward_reads_keep_decoding_and_random_reads_seek(tmp_path, av):
    frames = synthetic_frames(40, 48, 64)
    video = open_video(write_with_pyav(tmp_path / "long.mp4", frames, keyframe_every=10))
    decoded = []
    next_frame = video._next_frame
    video._next_frame = lambda index: decoded.append(index) or next_frame(index)
    for i in range(40):
        video[i]
    assert len(decoded) <= 41  # each frame decoded once, not again from the start for every read
    decoded.clear()
    video[35]  # from the keyframe at 30, not from the start
    assert len(decoded) <= 8
    decoded.clear()
    video[36]
    assert len(decoded) == 1


def test_a_rotated_phone_video_is_shown_upright(tmp_path, frames, av):
    video = open_video(write_with_pyav(tmp_path / "phone.mp4", frames, rotation=90))
    assert (video.height, video.width) == (W, H)
    assert np.abs(video[4].astype(int) - np.rot90(frames[4])).mean() < 8  # 90 degrees counter-clockwise


def test_bad_video_files(tmp_path, av):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    with pytest.raises(VideoError, match="notes.mp4 is not a video PyAV can open.*ffmpeg -i notes.mp4"):
        open_video(not_video)
    empty = tmp_path / "empty.avi"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 64, 48
        container.start_encoding()
    with pytest.raises(VideoError, match="empty.avi holds no video frames"):
        open_video(empty)
    with pytest.raises(VideoError, match="live source: read it with open_stream"):
        open_video("rtsp://camera.local/stream")


def _damage_packet(path: Path, av, decode_index: int) -> None:
    """Overwrite one packet's bytes with noise, as a bad sector or a broken download would."""
    with av.open(str(path)) as container:
        packets = [(packet.pos, packet.size) for packet in container.demux(container.streams.video[0]) if packet.size]
    position, size = packets[decode_index]
    data = bytearray(path.read_bytes())
    data[position:position + size] = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def test_a_damaged_frame_in_a_video_fails_when_read_naming_its_index(tmp_path, frames, av):
    # Keyframes at 0, 3, 6, 9; the one at 6 replaced by noise. movflags=faststart: the index
    # before the data, as videos on the web have it.
    path = tmp_path / "damaged.mp4"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = H, W, "yuv420p"
        stream.codec_context.gop_size = 3
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with av.open(str(path)) as container:
        keyframe_six = [packet.is_keyframe and packet.pts for packet in container.demux(container.streams.video[0])
                        if packet.size].index(6 * 1024)
    _damage_packet(path, av, keyframe_six)
    video = open_video(path)  # the header is intact: all 12 frames are counted
    assert len(video) == T
    intact = {i: video[i] for i in (0, 1, 2, 3, 9, 10, 11)}
    for _ in range(2):
        with pytest.raises(VideoError, match="frame 6 \\(at 0.600 s\\) cannot be decoded.*not skipped"):
            video[6]
    for i in (11, 2, 9, 0, 3):  # the reader recovers, and frames elsewhere are what they were
        assert np.array_equal(video[i], intact[i])


def test_a_raw_stream_cut_short_keeps_the_frames_that_are_there(tmp_path, frames, av):
    path = write_with_pyav(tmp_path / "cut.h264", frames, container_format="h264")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    video = open_video(path)  # no timestamps: counted by decoding, so fewer frames, none made up
    assert 0 < len(video) < T
    assert np.abs(video[1].astype(int) - frames[1]).mean() < 8


def test_a_damaged_frame_in_a_file_without_timestamps_is_refused_at_open(tmp_path, frames, av):
    path = write_with_pyav(tmp_path / "damaged.avi", frames, codec="mpeg4")
    _damage_packet(path, av, 6)
    # Counted by decoding (AVI has no presentation times): a lost frame would renumber the rest.
    with pytest.raises(VideoError, match="12 packets decode to only 11 frames.*cannot be numbered.*ffmpeg -i damaged"):
        open_video(path)


def test_without_pyav_video_files_name_the_install(monkeypatch, mp4, frames):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(VideoError, match="pip install av"):
        open_video(mp4)
    assert len(open_video(frames)) == T  # arrays need no PyAV


# ---------------------------------------------------------------- bad folders and paths

def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no frames here")
    with pytest.raises(VideoError, match="holds no frames.*ffmpeg -i video.mp4"):
        open_video(tmp_path / "empty")
    with pytest.raises(VideoError, match="missing does not exist; check the path"):
        open_video(tmp_path / "missing")


def test_a_frame_of_another_size_is_refused_at_open_naming_both(tmp_path, frames):
    folder = write_folder(tmp_path / "sizes", frames[:6], [f"{i:05d}" for i in range(6)], ".png")
    Image.fromarray(frames[4][:80, :100]).save(folder / "00004.png")
    with pytest.raises(VideoError, match="frame 4 \\(00004.png\\) is 100x80 but frame 0 \\(00000.png\\) is 128x96; "
                                         "resize every frame to one size"):
        open_video(folder)


def test_a_truncated_jpeg_fails_when_read_naming_file_and_index(jpeg_folder):
    broken = jpeg_folder / "5.jpg"
    data = broken.read_bytes()
    broken.write_bytes(data[:len(data) // 2])  # the header survives: open_video succeeds
    video = open_video(jpeg_folder)
    assert len(video) == T
    with pytest.raises(VideoError, match="frame 5 \\(.*5.jpg\\) cannot be read.*not skipped"):
        video[5]
    assert video[6].shape == (H, W, 3)  # the others still read


def test_an_unreadable_header_fails_at_open(jpeg_folder):
    (jpeg_folder / "7.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(VideoError, match="frame 7 \\(.*7.jpg\\) is not a readable image"):
        open_video(jpeg_folder)


# ---------------------------------------------------------------- streams

def test_stream_of_a_file_gives_open_videos_frames_with_times(mp4):
    video = open_video(mp4)
    streamed = list(open_stream(mp4))
    assert [frame.index for frame in streamed] == list(range(T))
    assert [frame.time for frame in streamed] == pytest.approx([i / 10 for i in range(T)])
    assert all(np.array_equal(frame.rgb, video[frame.index]) for frame in streamed)


def test_stream_of_a_list_and_of_a_generator(frames):
    streamed = list(open_stream(frames))
    assert isinstance(streamed[3], StreamFrame) and streamed[3].index == 3 and streamed[3].time is None
    assert streamed[3].rgb is frames[3]  # passed on as it came, not copied or kept
    assert [index for index, _, _ in open_stream(frame for frame in frames)] == list(range(T))
    assert len(list(open_stream(np.stack(frames)))) == T


def test_stream_size_change_and_bad_frames_name_the_frame(frames):
    changing = frames[:3] + [frames[3][:48]]
    stream = open_stream(changing)
    for _ in range(3):
        next(stream)
    with pytest.raises(VideoError, match="streamed frame 3 is 128x48 but frame 0 was 128x96"):
        next(stream)
    with pytest.raises(VideoError, match="streamed frame 1 has dtype float64"):
        list(open_stream([frames[0], frames[1] / 255.0]))
    with pytest.raises(VideoError, match="pass \\[frame\\] for a single image"):
        open_stream(frames[0])


def test_live_sources_that_cannot_be_opened_fail_at_once(av):
    with pytest.raises(VideoError, match="camera /dev/video99 does not exist"):
        open_stream("/dev/video99")
    with pytest.raises(VideoError, match="cannot open rtsp://127.0.0.1:9/none.*check the address"):
        open_stream("rtsp://127.0.0.1:9/none")


def test_the_live_reader_decodes_a_real_feed_as_open_video_does(mp4):
    from runtime.video_frames import _live_frames  # what a camera or URL goes through, here on a file
    video = open_video(mp4)
    live = list(_live_frames(str(mp4), None, {}, timeout=None))
    assert [frame.index for frame in live] == list(range(T))
    assert [frame.time for frame in live] == pytest.approx([i / 10 for i in range(T)])
    assert all(np.array_equal(frame.rgb, video[frame.index]) for frame in live)


class _FakePacket:
    def __init__(self, frames=None, error=None):
        self.frames, self.error = frames, error

    def decode(self):
        if self.error:
            raise self.error
        return self.frames


class _FakeContainer:
    """A live feed whose third packet is damaged, as PyAV's container would hand it over."""

    def __init__(self, av, frames):
        self.streams = type("Streams", (), {"video": ["video"]})()
        self.packets = []
        for index, rgb in enumerate(frames):
            if index == 2:
                self.packets.append(_FakePacket(error=av.error.InvalidDataError(-1094995529, "Invalid data")))
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            self.packets.append(_FakePacket([frame]))
        self.closed = False

    def demux(self, stream):
        return iter(self.packets)

    def close(self):
        self.closed = True


def test_a_damaged_packet_on_a_live_feed_is_skipped_with_a_warning(monkeypatch, frames, av):
    fake = _FakeContainer(av, frames[:5])
    monkeypatch.setattr(av, "open", lambda *args, **kwargs: fake)
    with pytest.warns(FrameWarning, match="a packet that frame 2 was due in could not be decoded"):
        streamed = list(open_stream("rtsp://camera.local/live"))
    assert [frame.index for frame in streamed] == [0, 1, 2, 3, 4]  # numbered as they arrive
    assert np.array_equal(streamed[2].rgb, frames[2])
    assert fake.closed


# ---------------------------------------------------------------- writing

def test_write_video_is_atomic(tmp_path, frames, av):
    out = tmp_path / "out" / "clip.mp4"
    assert write_video(out, frames) == out
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.mp4"]  # no temporary file left

    def failing():
        yield from frames[:4]
        raise RuntimeError("the tracker failed mid-video")
    with pytest.raises(RuntimeError, match="mid-video"):
        write_video(tmp_path / "failed.mp4", failing())
    with pytest.raises(VideoError, match="frame 3 is 64x48 but frame 0 is 128x96"):
        write_video(out, frames[:3] + [frames[3][:48, :64]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.mp4"]
    assert len(open_video(out)) == T  # the earlier video, untouched by the failed overwrite


def test_write_video_pads_odd_sizes_and_refuses_what_it_cannot_write(tmp_path, frames, av):
    odd = [frame[:95, :127] for frame in frames]
    video = open_video(write_video(tmp_path / "odd.avi", odd, fps=25))
    assert (video.height, video.width) == (96, 128)
    assert np.abs(video[0][:95, :127].astype(int) - odd[0]).mean() < 8
    with pytest.raises(VideoError, match="write_video writes .mp4 .*name the output e.g. out.mp4"):
        write_video(tmp_path / "out.gif", frames)
    with pytest.raises(VideoError, match="no frames to write"):
        write_video(tmp_path / "none.mp4", [])
    with pytest.raises(VideoError, match="fps 0 is not a positive number"):
        write_video(tmp_path / "zero.mp4", frames, fps=0)


# ---------------------------------------------------------------- sam2's preprocessing, no torch here

def test_frame_resize_square_equals_sam2s_loader(jpeg_folder):
    try:
        from sam2.utils.misc import _load_img_as_tensor
    except ImportError as err:
        pytest.skip(f"sam2 is not importable ({err}); the samedge[sam2] extra installs it")
    video = open_video(jpeg_folder)
    for size in (64, 1024):
        expected, height, width = _load_img_as_tensor(str(jpeg_folder / "3.jpg"), size)
        ours = frame_resize_square(video[3], size)
        assert (height, width) == (H, W)
        assert ours.dtype == np.float32 and ours.shape == (3, size, size)
        assert np.array_equal(ours, expected.float().numpy())  # bit for bit


def test_frame_resize_square_refuses_bad_frames(frames):
    assert frame_resize_square(frames[0], 32).max() <= 1.0
    with pytest.raises(VideoError, match="dtype float32"):
        frame_resize_square(frames[0].astype(np.float32), 32)
    with pytest.raises(VideoError, match="size 0 is not a positive number"):
        frame_resize_square(frames[0], 0)


def test_the_module_imports_neither_torch_nor_pyav():
    script = textwrap.dedent("""
        import sys
        for name in ("torch", "sam2"):
            sys.modules[name] = None
        import numpy as np
        from runtime.video_frames import open_video, frame_resize_square
        video = open_video(np.zeros((2, 8, 8, 3), np.uint8))
        assert frame_resize_square(video[1], 4).shape == (3, 4, 4)
        assert "av" not in sys.modules, "PyAV is imported only for video files and streams"
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_source_gives_writable_frames_and_no_warnings(frames, jpeg_folder, mp4):
    for source in (frames, jpeg_folder, mp4):
        video = open_video(source)
        assert isinstance(video, VideoFrames)
        video[0][0, 0] = 0  # the caller's to draw on
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # reading a normal folder warns about nothing
        list(open_video(jpeg_folder))
