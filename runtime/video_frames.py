"""The frames SAM 2 video tracking reads: folders of images, video files, arrays and live streams.

    video = open_video("frames/")        # or "clip.mp4", or a uint8 array [T, H, W, 3]
    video[0], len(video), video.names    # uint8 RGB [H, W, 3], read when asked
    for frame in open_stream("/dev/video0"): ...   # a camera, an rtsp:// URL, a file, your own loop
    write_video("tracked.mp4", frames, fps=10)

A folder holds one image per frame (.jpg .jpeg .png .bmp .webp, any case; other files and
hidden ones, such as macOS's "._00001.jpg", are ignored), ordered by number when every name is
one (sam2's 00000.jpg, 00001.jpg, ...), else naturally (frame2 before frame10). Frames are
shown as a viewer shows them, like runtime.load_image: a photo's EXIF orientation and a video's
rotation (phone videos store it) are applied, as ffmpeg does when it extracts the JPEG folders
sam2 reads. sam2 itself ignores EXIF orientation, so only on frames that carry one do the pixels
differ from sam2's.

Bad input, and what happens (every refusal is a VideoError naming the source, the frame and the fix):
- nothing to track (an empty folder, a video without frames, an empty array): refused at open.
- frames of different sizes: refused, naming the first frame that differs and both sizes; the fix
  is to resize every frame to one size. A folder is checked at open from its files' headers (no
  decoding); a video file as each frame is decoded (a stream may change size mid-way).
- an unreadable frame (a corrupt or truncated file, a damaged packet): refused when that frame
  is read, naming the file or video and the frame index, and at open when a header cannot be
  read. Not skipped: skipping would shift every later frame's index, and prompts and masks refer
  to frames by index. A video file's frames are known by their timestamps, so a damaged one is
  found where it is; in a file without usable timestamps (AVI, a raw .h264 stream), which is
  decoded once at open to count its frames, a packet that gives no frame is refused at open.
  (A raw stream can hide such a loss: its packets are cut from the data itself.) A file cut
  short has the frames that are there.
- a path that does not exist, a file PyAV cannot open, a non-uint8 array or one of another shape:
  refused at open.
- an index below 0 or past the end: IndexError naming the valid range (a negative index is more
  likely a bug than a count from the end).

Live sources (open_stream on a camera or a URL) differ from files on one point: a packet that
cannot be decoded is skipped with a FrameWarning, since a live feed cannot be read again and
stopping would end the session; frames are numbered as they arrive. A file read by open_stream
is played as if live but keeps the rule for files.

Video files and streams need PyAV (pip install av); folders and arrays need only Pillow.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import os
import re
import stat
import struct
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import ExifTags, Image

from .atomic import atomic_write
from .images import _as_shown

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Containers write_video writes, by suffix: the ones that hold both of its codecs.
WRITE_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
# libx264 where this PyAV has it (smaller files, better pictures); mpeg4 is in every FFmpeg build,
# and the one for AVI, which has no presentation times for H.264's reordered frames.
WRITE_CODECS = ("libx264", "mpeg4")
AVI_CODECS = ("mpeg4",)
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
# Seconds a URL may take to connect, or stay silent, before open_stream gives up rather than hang.
URL_TIMEOUT_S = 10.0

_INSTALL_AV = "pip install av"
_RESIZE_FIX = "resize every frame to one size (or drop the ones that differ)"


class VideoError(ValueError):
    """A video, frame or stream samedge cannot use, with the reason and the fix."""


class FrameWarning(UserWarning):
    """A frame of a live stream that could not be decoded and was skipped."""


class StreamFrame(NamedTuple):
    """One frame of open_stream: its number in arrival order, its time in seconds from the
    source's timestamps (None where it has none) and its pixels, uint8 RGB [H, W, 3]."""

    index: int
    time: float | None
    rgb: np.ndarray


def _import_av():
    try:
        import av
    except ImportError:
        raise VideoError(f"video files, cameras and streams need PyAV, which is not installed: {_INSTALL_AV} "
                         "(folders of images and numpy arrays work without it)") from None
    return av


def _size(height: int, width: int) -> str:
    return f"{width}x{height}"


def _check_rgb(frame, what: str) -> np.ndarray:
    """`frame` as it must be: a uint8 RGB [H, W, 3] numpy array of at least one pixel."""
    if not isinstance(frame, np.ndarray):
        raise VideoError(f"{what} is a {type(frame).__name__}, not a numpy array; pass uint8 RGB [H, W, 3] "
                         "arrays (np.asarray(pil_image.convert('RGB')) for a PIL image)")
    if frame.dtype != np.uint8:
        raise VideoError(f"{what} has dtype {frame.dtype}; pass uint8 RGB (0..255): "
                         "(frame * 255).round().astype(np.uint8) for 0..1 floats, "
                         "runtime.images.to_rgb_uint8(frame) for 16-bit or bool ones")
    if frame.ndim != 3 or frame.shape[2] != 3:
        if frame.ndim == 3 and frame.shape[0] == 3:
            fix = "it looks channels-first: pass frame.transpose(1, 2, 0)"
        else:
            fix = "runtime.images.to_rgb_uint8(frame) turns greyscale [H, W] and RGBA [H, W, 4] into RGB"
        raise VideoError(f"{what} has shape {frame.shape}, not [H, W, 3]; {fix}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise VideoError(f"{what} has shape {frame.shape}, which holds no pixels; pass frames of at least 1x1")
    return frame


def _frame_rgb(frame) -> np.ndarray:
    """A decoded PyAV frame as uint8 RGB [H, W, 3], turned as its display matrix says."""
    rgb = frame.to_ndarray(format="rgb24")
    # rotation: degrees counter-clockwise (PyAV's VideoFrame.rotation), what ffmpeg's autorotate undoes;
    # mirror flips in the matrix are rare and not applied.
    turns = round(frame.rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


class VideoFrames(ABC):
    """The frames of a video, each read when asked: video[i] is uint8 RGB [H, W, 3].

    Each read gives a new array the caller may change. `names` holds one name per frame (a
    folder's file stems, else "00000", "00001", ...), `source` says where the frames come from.
    Close it (or use `with`) to let go of a video file.
    """

    def __init__(self, source: str, names: list[str], height: int, width: int):
        self.source = source
        self.names = names
        self.height = height
        self.width = width

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            raise TypeError(f"frames of {self.source} are read one at a time: video[i], not video[a:b]")
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is out of range: {self.source} has frames 0..{len(self) - 1}"
                             + (" (negative indices do not count from the end)" if index < 0 else ""))
        rgb = self._read(index)
        if rgb.shape[:2] != (self.height, self.width):
            raise VideoError(f"{self.source}: frame {index} is {_size(*rgb.shape[:2])} but frame 0 is "
                             f"{_size(self.height, self.width)}; {_RESIZE_FIX}")
        return rgb

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[index] for index in range(len(self)))

    def __repr__(self) -> str:
        return f"<VideoFrames {self.source}: {len(self)} frames of {_size(self.height, self.width)}>"

    def close(self) -> None:
        """Let go of what the frames are read from (a video file's decoder); nothing for others."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def _read(self, index: int) -> np.ndarray:
        """Frame `index` (already checked to be in range) as uint8 RGB [H, W, 3]."""

    def _time(self, index: int) -> float | None:
        """Frame `index`'s time in seconds, where the source has timestamps."""
        return None


# ---------------------------------------------------------------- arrays

class _ArrayFrames(VideoFrames):
    def __init__(self, frames, what: str):
        if isinstance(frames, np.ndarray):
            if frames.ndim == 3 and frames.shape[-1] == 3:
                raise VideoError(f"{what} of shape {frames.shape} is one image, not a video; "
                                 "pass array[None] for a one-frame video, or [T, H, W, 3]")
            if frames.ndim != 4:
                raise VideoError(f"{what} has shape {frames.shape}, not [T, H, W, 3]; "
                                 "stack RGB frames [H, W, 3] along a first axis (np.stack(frames))")
            if len(frames) == 0:
                raise VideoError(f"{what} of shape {frames.shape} holds no frames; pass at least one")
            _check_rgb(frames[0], f"{what}'s frames")  # one check covers all: they share dtype and shape
        else:
            if len(frames) == 0:
                raise VideoError(f"{what} holds no frames; pass at least one uint8 RGB [H, W, 3] array")
            for index, frame in enumerate(frames):
                _check_rgb(frame, f"{what}[{index}]")
                if frame.shape != frames[0].shape:
                    raise VideoError(f"{what}[{index}] is {_size(*frame.shape[:2])} but [0] is "
                                     f"{_size(*frames[0].shape[:2])}; {_RESIZE_FIX}")
        self._frames = frames
        height, width = frames[0].shape[:2]
        super().__init__(f"{what} of {len(frames)} frames", [f"{i:05d}" for i in range(len(frames))], height, width)

    def _read(self, index: int) -> np.ndarray:
        # A copy: the caller may draw on it without changing the source.
        return np.array(self._frames[index], copy=True)


# ---------------------------------------------------------------- folders of images

def _natural_key(name: str) -> tuple:
    """frame2 before frame10: runs of digits compare as numbers."""
    parts = re.split(r"(\d+)", name.casefold())
    return tuple(int(part) if odd else part for odd, part in zip(itertools.cycle((False, True)), parts)), name


def frame_paths(folder: Path) -> list[Path]:
    """The folder's image files in frame order (see the module docstring)."""
    try:
        entries = list(folder.iterdir())
    except OSError as err:
        raise VideoError(f"cannot list folder {folder} ({err.strerror or err}); check its permissions") from None
    paths = [entry for entry in entries
             if entry.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith(".") and entry.is_file()]
    if not paths:
        raise VideoError(f"folder {folder} holds no frames (no {' '.join(IMAGE_SUFFIXES)} files); "
                         "extract a video's frames into it, e.g. ffmpeg -i video.mp4 -q:v 2 -start_number 0 "
                         f"{folder}/%05d.jpg, or pass the video file itself")
    numbered = all(re.fullmatch(r"[0-9]+", path.stem) for path in paths)  # sam2's 00000.jpg, 00001.jpg, ...

    def key(path: Path):
        return int(path.stem) if numbered else _natural_key(path.stem)

    paths.sort(key=lambda path: (key(path), path.name))
    for earlier, later in itertools.pairwise(paths):
        if key(earlier) == key(later):
            raise VideoError(f"folder {folder}: {earlier.name} and {later.name} are both frame {earlier.stem}, "
                             "so their order is unknown; remove or rename one")
    return paths


def _shown_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) of an opened, not yet decoded image as shown (after its EXIF orientation)."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation)
    except (SyntaxError, struct.error):  # runtime.images shows such files as stored, and so do we
        orientation = None
    width, height = image.size
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)  # 5..8 turn by 90 degrees


_REPAIR_FIX = "re-extract or re-save that frame (or the folder's frames from the video)"
_NOT_SKIPPED = "frames are not skipped, as that would shift the index of every later frame"


class _FolderFrames(VideoFrames):
    def __init__(self, folder: Path):
        self._paths = frame_paths(folder)
        sizes = [self._header_size(index) for index in range(len(self._paths))]
        for index, size in enumerate(sizes):
            if size != sizes[0]:
                raise VideoError(f"folder {folder}: frame {index} ({self._paths[index].name}) is {_size(*size)} "
                                 f"but frame 0 ({self._paths[0].name}) is {_size(*sizes[0])}; {_RESIZE_FIX}")
        super().__init__(str(folder), [path.stem for path in self._paths], *sizes[0])

    def _header_size(self, index: int) -> tuple[int, int]:
        path = self._paths[index]
        try:
            with Image.open(path) as image:  # reads the header only: no pixels are decoded
                return _shown_size(image)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise VideoError(f"frame {index} ({path}) is not a readable image ({err}); {_REPAIR_FIX}; "
                             f"{_NOT_SKIPPED}") from err

    def _read(self, index: int) -> np.ndarray:
        path = self._paths[index]
        try:
            with Image.open(path) as image:
                image.load()
                # convert("RGB") as sam2's loader does; the turn as runtime.load_image does. np.array,
                # not asarray: Pillow's buffer is read-only, and callers may draw on a frame.
                return np.array(_as_shown(image).convert("RGB"))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise VideoError(f"frame {index} ({path}) cannot be read ({err}); {_REPAIR_FIX}; "
                             f"{_NOT_SKIPPED}") from err


# ---------------------------------------------------------------- video files

def _open_container(av, path: Path, **kwargs):
    try:
        return av.open(str(path), **kwargs)
    except (av.FFmpegError, OSError) as err:
        raise VideoError(f"{path} is not a video PyAV can open ({err}); convert it (ffmpeg -i {path.name} "
                         "out.mp4) or extract its frames into a folder of JPEGs") from err


def _video_stream(container, source: str):
    if not container.streams.video:
        others = len(container.streams)
        container.close()
        only = f" (only {others} audio or other streams)" if others else " (no streams at all: an empty video?)"
        raise VideoError(f"{source} holds no video stream{only}; pass a video with frames")
    return container.streams.video[0]


class _VideoFileFrames(VideoFrames):
    """Decodes on demand. Frames are told apart by their timestamps (PTS): a forward read keeps
    decoding from where the decoder is; any other read seeks to the keyframe before the frame and
    decodes forward from there, which gives the same pixels. Files without timestamps are read
    from the start instead of seeking."""

    def __init__(self, path: Path):
        self._av = _import_av()
        self._path = path
        self._lock = threading.Lock()  # the decoder has one position: one read at a time
        self._container = None
        self._open()
        try:
            self._index_frames()
            first = self._read(0)  # decodes one frame: the size as shown, and a codec that works
        except BaseException:
            self.close()
            raise
        super().__init__(str(path), [f"{i:05d}" for i in range(self._count)], *first.shape[:2])

    def _open(self) -> None:
        """(Re)open the file: the one way back to its start that every container supports."""
        self.close()
        self._container = _open_container(self._av, self._path)
        self._stream = _video_stream(self._container, str(self._path))
        self._decoded = None  # the decoder's frames from its current position
        self._damage = None  # why the decoder refused a packet, if it did
        self._position = -1  # the index of the frame it gave last; None: unknown, after a seek

    def _index_frames(self) -> None:
        # Counting: demux the packets, without decoding, and keep their timestamps. A container
        # whose packets lack unique timestamps (a raw .h264 stream) gives no count this way: it
        # is decoded once instead. So is AVI, which stores frame numbers in decode order, not
        # presentation times: with H.264's reordered frames its made-up timestamps are wrong.
        pts, keyframe = [], []
        try:
            for packet in self._container.demux(self._stream):
                # size 0: the flush packet at the end; discard: frames an edit list cuts, which the decoder drops
                if packet.size and not packet.is_discard:
                    pts.append(packet.pts)
                    keyframe.append(packet.is_keyframe)
        except self._av.FFmpegError as err:
            raise VideoError(f"{self._path} is damaged after {len(pts)} frames ({err}); re-download or "
                             "re-encode it (ffmpeg -i IN -c:v libx264 OUT.mp4)") from err
        if self._container.format.name != "avi" and None not in pts and len(set(pts)) == len(pts):
            self._pts = sorted(pts)  # decode order -> presentation order
            index_of = {value: index for index, value in enumerate(self._pts)}
            self._keyframes = sorted(index_of[value] for value, key in zip(pts, keyframe, strict=True) if key)
            self._count = len(pts)
        else:
            self._pts = None
            self._open()
            self._count = 0
            while self._next_frame(self._count) is not None:
                self._count += 1
            if self._damage is not None or self._count < len(pts):  # a packet gave no frame
                reason = f" ({self._damage})" if self._damage is not None else ""
                raise VideoError(f"{self._path}: {len(pts)} packets decode to only {self._count} frames{reason}: one "
                                 "is damaged, and without timestamps the frames after it cannot be numbered; "
                                 f"re-download it, or re-encode it (ffmpeg -i {self._path.name} out.mp4) to number "
                                 "the frames that are left")
        self._open()  # back to the start, where the first read begins
        if self._count == 0:
            raise VideoError(f"{self._path} holds no video frames; pass a video with at least one")

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _time(self, index: int) -> float | None:
        if self._pts is None:
            return None
        return float(self._pts[index] * self._stream.time_base)

    def _decoding(self) -> Iterator:
        """Decoded frames from the demuxer's position on. A packet the decoder refuses is passed
        over, so the frames after it still come: the frame it held is missing, which reading that
        frame reports (frames are known by timestamp); `_damage` keeps the decoder's reason."""
        for packet in self._container.demux(self._stream):
            try:
                frames = packet.decode()
            except self._av.FFmpegError as err:
                self._damage = err
                continue
            yield from frames

    def _next_frame(self, index: int):
        """The decoder's next frame, or None at the end; `index`: the frame being looked for."""
        if self._decoded is None:
            self._decoded = self._decoding()
        try:
            return next(self._decoded)
        except StopIteration:
            return None
        except self._av.FFmpegError as err:  # from the demuxer: the file cannot be read on
            self._decoded, self._position = None, None  # the next read seeks
            raise VideoError(f"{self._path}: frame {index} cannot be read ({err}); the file is damaged there: "
                             f"re-encode or re-download it; {_NOT_SKIPPED}") from err

    def _read(self, index: int) -> np.ndarray:
        with self._lock:
            if self._container is None:
                raise VideoError(f"{self._path} was closed; open it again with open_video")
            frame = self._decode_by_pts(index) if self._pts is not None else self._decode_by_count(index)
            return _frame_rgb(frame)

    def _missing(self, index: int) -> VideoError:
        where = f" (at {self._time(index):.3f} s)" if self._pts is not None else ""
        reason = f" ({self._damage})" if self._damage is not None else ""
        return VideoError(f"{self._path}: frame {index}{where} cannot be decoded{reason}: the file is damaged or cut "
                          f"short there; re-download it, or re-encode it (ffmpeg -i {self._path.name} out.mp4), which "
                          f"drops that frame and renumbers the rest; {_NOT_SKIPPED}")

    def _decode_by_count(self, index: int):
        if self._position is None or self._position >= index:
            self._open()
        frame = None
        while self._position < index:
            frame = self._next_frame(index)
            if frame is None:
                raise self._missing(index)
            self._position += 1
        return frame

    def _keyframe_before(self, index: int) -> int:
        """The last keyframe at or before frame `index` (0 where none is marked)."""
        at = bisect.bisect_right(self._keyframes, index)
        return self._keyframes[at - 1] if at else 0

    def _next_keyframe(self, position: int) -> int:
        """The first keyframe after the frame following `position`: a read from `position` up to
        it decodes forward; one from there on seeks, which decodes fewer frames."""
        at = bisect.bisect_right(self._keyframes, position + 1)
        return self._keyframes[at] if at < len(self._keyframes) else self._count

    def _index_of(self, pts: int) -> int | None:
        at = bisect.bisect_left(self._pts, pts)
        return at if at < len(self._pts) and self._pts[at] == pts else None

    def _seek(self, keyframe: int) -> None:
        try:
            self._container.seek(self._pts[keyframe], stream=self._stream, backward=True)
        except self._av.FFmpegError:  # a container that cannot seek: from the start
            self._open()
            return
        self._decoded, self._position, self._damage = None, None, None

    def _decode_by_pts(self, index: int):
        target = self._pts[index]
        position = self._position
        if not (position is not None and position < index < self._next_keyframe(position)):
            self._seek(self._keyframe_before(index))
        landed = self._position is None  # just after a seek, before any frame came out
        while True:
            frame = self._next_frame(index)
            pts = None if frame is None else frame.pts
            if pts is not None and pts == target:
                self._position = index
                return frame
            if pts is not None and pts < target:
                # An earlier frame (or one an edit list cut, which is in no index: position unknown).
                self._position, landed = self._index_of(pts), False
                continue
            if landed:
                # The seek went past the frame (some demuxers seek by decode time): read from the start.
                self._open()
                landed = False
                continue
            raise self._missing(index)


# ---------------------------------------------------------------- opening

def _is_url(text: str) -> bool:
    scheme, separator, _ = text.partition("://")
    return bool(separator) and scheme.lower() in LIVE_SCHEMES


def _is_camera(path: Path) -> bool:
    if str(path).startswith("/dev/video"):
        return True
    try:
        return stat.S_ISCHR(path.stat().st_mode)
    except OSError:
        return False


def _missing_path(path: Path) -> VideoError:
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    return VideoError(f"{path} does not exist{where}; check the path to the video file or frame folder")


def open_video(source) -> VideoFrames:
    """The frames of a folder of images, a video file, a uint8 array [T, H, W, 3] or a list of
    uint8 arrays [H, W, 3]; see the module docstring for their order and for bad input."""
    if isinstance(source, VideoFrames):
        return source
    if isinstance(source, np.ndarray):
        return _ArrayFrames(source, "array")
    if isinstance(source, (list, tuple)):
        return _ArrayFrames(source, type(source).__name__)
    if not isinstance(source, (str, os.PathLike)):
        hint = ("; for frames that arrive one by one use open_stream, or pass list(frames)"
                if isinstance(source, Iterable) else "")
        raise VideoError(f"cannot read video frames from a {type(source).__name__}; pass a folder of images, a video "
                         f"file, a uint8 array [T, H, W, 3] or a list of uint8 [H, W, 3] arrays{hint}")
    path = Path(source)
    if _is_url(os.fsdecode(source)):
        raise VideoError(f"{os.fsdecode(source)} is a live source: read it with open_stream, or download the "
                         "video and open the file")
    try:
        kind = path.stat().st_mode
    except FileNotFoundError:
        raise _missing_path(path) from None
    except (OSError, ValueError) as err:  # a name too long, a NUL byte, no permission on a parent
        raise VideoError(f"{path} is not a usable path ({err}); pass a video file or a folder of frames") from err
    if stat.S_ISDIR(kind):
        return _FolderFrames(path)
    if stat.S_ISCHR(kind):
        raise VideoError(f"{path} is a device (a camera?): read it with open_stream, which takes frames as they come")
    if not stat.S_ISREG(kind):  # a pipe could block or never end
        raise VideoError(f"{path} is not a regular file; pass a video file or a folder of frames")
    return _VideoFileFrames(path)


# ---------------------------------------------------------------- streams

def open_stream(source, options: dict | None = None) -> Iterator[StreamFrame]:
    """Frames as they arrive, one StreamFrame at a time, holding no more than the current one.

    `source`: a camera (/dev/video0, through PyAV's v4l2), a URL (rtsp://, over TCP; http(s)://
    ...), a video file or frame folder (played as if live: open_video's frames), or any iterable
    of uint8 [H, W, 3] arrays (your own capture loop). `options` go to FFmpeg for a camera or a
    URL, over the defaults, e.g. {"video_size": "1280x720", "framerate": "30"}. A URL that takes
    over URL_TIMEOUT_S seconds to connect, or goes silent that long, ends with a VideoError
    rather than hanging. The source is opened here, so a wrong one fails at once; frames are
    read while iterating.
    """
    if isinstance(source, (str, os.PathLike)):
        text, path = os.fsdecode(source), Path(source)
        if _is_url(text):
            defaults = {"rtsp_transport": "tcp"} if text.lower().startswith("rtsp") else {}
            return _live_frames(text, None, {**defaults, **(options or {})}, timeout=URL_TIMEOUT_S)
        if _is_camera(path):
            if not path.exists():
                raise VideoError(f"camera {path} does not exist; ls /dev/video* lists the cameras here")
            return _live_frames(text, "v4l2", dict(options or {}), timeout=None)
        return _recorded_frames(open_video(path), close=True)
    if isinstance(source, VideoFrames):
        return _recorded_frames(source, close=False)  # the caller's to close
    if isinstance(source, np.ndarray) and source.ndim != 4:
        raise VideoError(f"an array of shape {source.shape} is not a sequence of frames [T, H, W, 3]; "
                         "pass [frame] for a single image")
    if not isinstance(source, Iterable):
        raise VideoError(f"cannot stream frames from a {type(source).__name__}; pass a camera device, a URL, "
                         "a video file or an iterable of uint8 [H, W, 3] arrays")
    return _iterated_frames(source)


def _recorded_frames(video: VideoFrames, close: bool) -> Iterator[StreamFrame]:
    try:
        for index in range(len(video)):
            yield StreamFrame(index, video._time(index), video[index])
    finally:
        if close:
            video.close()


def _iterated_frames(frames: Iterable) -> Iterator[StreamFrame]:
    first_shape = None
    for index, rgb in enumerate(frames):
        _check_rgb(rgb, f"streamed frame {index}")
        if first_shape is None:
            first_shape = rgb.shape
        elif rgb.shape != first_shape:
            raise VideoError(f"streamed frame {index} is {_size(*rgb.shape[:2])} but frame 0 was "
                             f"{_size(*first_shape[:2])}; {_RESIZE_FIX} before passing them")
        yield StreamFrame(index, None, rgb)


def _open_live(av, source: str, format: str | None, options: dict, timeout):
    try:
        container = av.open(source, format=format, options=options, timeout=timeout)
    except (av.FFmpegError, OSError) as err:
        fix = ("check that it is a camera, that it is not in use, and that you may read it (the video group)"
               if format == "v4l2" else "check the address, the network and the credentials (try it in ffplay or VLC)")
        raise VideoError(f"cannot open {source} ({err}); {fix}") from err
    _video_stream(container, source)
    return container


def _live_frames(source: str, format: str | None, options: dict, timeout) -> Iterator[StreamFrame]:
    av = _import_av()
    container = _open_live(av, source, format, options, timeout)  # here, not at the first frame: fail at once

    def frames() -> Iterator[StreamFrame]:
        packets, index, first_size = container.demux(container.streams.video[0]), 0, None
        try:
            while (packet := _next_packet(av, packets, source, index)) is not None:
                try:
                    decoded = packet.decode()
                except av.FFmpegError as err:
                    # A live feed cannot be read again; stopping would end the session: skip it, say so.
                    warnings.warn(f"{source}: a packet that frame {index} was due in could not be decoded ({err}); "
                                  "skipped, and the next frame that decodes is numbered "
                                  f"{index}", FrameWarning, stacklevel=2)
                    continue
                for frame in decoded:
                    rgb = _frame_rgb(frame)
                    if first_size is None:
                        first_size = rgb.shape[:2]
                    elif rgb.shape[:2] != first_size:
                        raise VideoError(f"{source}: frame {index} is {_size(*rgb.shape[:2])} but frame 0 was "
                                         f"{_size(*first_size)}: the source changed its size; fix it (options "
                                         "{'video_size': 'WxH'} for a camera) and open the stream again")
                    yield StreamFrame(index, frame.time, rgb)
                    index += 1
        finally:
            container.close()

    return frames()


def _next_packet(av, packets: Iterator, source: str, index: int):
    """The stream's next packet, None at its end; a failing connection or device is a VideoError."""
    try:
        return next(packets, None)
    except av.FFmpegError as err:
        raise VideoError(f"{source} stopped before frame {index} ({err}); check the camera or the "
                         "network and call open_stream again") from err


# ---------------------------------------------------------------- writing

def _frame_rate(fps) -> Fraction:
    try:
        rate = Fraction(fps).limit_denominator(1001)  # 29.97 -> 2997/100; NTSC's 30000/1001 stays exact
    except (TypeError, ValueError):
        rate = None
    if rate is None or rate <= 0:
        raise VideoError(f"fps {fps!r} is not a positive number of frames per second; pass e.g. fps=10")
    return rate


def _even(rgb: np.ndarray) -> np.ndarray:
    # yuv420p keeps colour at half resolution both ways, so its encoders take only even sizes:
    # pad a row or column by repeating the edge, the least visible choice; crop it off when reading.
    pad_rows, pad_columns = rgb.shape[0] % 2, rgb.shape[1] % 2
    if pad_rows or pad_columns:
        return np.pad(rgb, ((0, pad_rows), (0, pad_columns), (0, 0)), mode="edge")
    return rgb


def write_video(path, frames: Iterable[np.ndarray], fps=10) -> Path:
    """Encode uint8 RGB [H, W, 3] frames into a video file (.mp4 .m4v .mov .mkv .avi) with PyAV.

    The file appears under its name only once complete (written under a temporary name beside
    it, then renamed): a failure, or a bad frame, leaves no half-written video. Odd sizes are
    padded to even ones by one edge row or column.
    """
    path = Path(path)
    container_format = WRITE_FORMATS.get(path.suffix.lower())
    if container_format is None:
        raise VideoError(f"write_video writes {' '.join(WRITE_FORMATS)} files, not {path.name!r}; "
                         "name the output e.g. out.mp4")
    rate = _frame_rate(fps)
    av = _import_av()
    codecs = AVI_CODECS if container_format == "avi" else WRITE_CODECS
    codec = next((name for name in codecs if name in av.codecs_available), None)
    if codec is None:
        raise VideoError(f"this PyAV has none of the encoders {', '.join(codecs)}; {_INSTALL_AV} "
                         "(its wheels carry them)")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise VideoError(f"no frames to write to {path}; pass at least one uint8 RGB [H, W, 3] array")
    first = _check_rgb(first, "frame 0")

    def write(temporary: str) -> None:
        with av.open(temporary, "w", format=container_format) as container:
            stream = container.add_stream(codec, rate=rate)
            stream.height, stream.width = _even(first).shape[:2]
            stream.pix_fmt = "yuv420p"
            if codec == "mpeg4":
                # A fixed quantiser: with PyAV's bit rate of 0 mpeg4 blurs more with every frame.
                stream.codec_context.qscale = True
            for index, rgb in enumerate(itertools.chain([first], frames)):
                _check_rgb(rgb, f"frame {index}")
                if rgb.shape != first.shape:
                    raise VideoError(f"frame {index} is {_size(*rgb.shape[:2])} but frame 0 is "
                                     f"{_size(*first.shape[:2])}; {_RESIZE_FIX}")
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_even(rgb)), format="rgb24")
                frame.pts = index  # in 1/fps: the stream's time base
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))  # the frames the encoder still holds

    atomic_write(path, write)
    return path


# ---------------------------------------------------------------- sam2's frame preprocessing

def frame_resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """float32 [3, size, size] in 0..1: what sam2's video loader makes of a frame.

    sam2 1.1.0 (sam2/utils/misc.py, _load_img_as_tensor): PIL resize to (size, size) with
    Pillow's default filter (bicubic for RGB), np.array(...) / 255.0 in float64, then stored in
    a float32 tensor, channels first. The tracker's frames must equal sam2's, so the same steps
    in the same order (the mean/std normalisation follows in the tracker).
    """
    rgb = _check_rgb(rgb, "frame")
    size = operator.index(size)
    if size < 1:
        raise VideoError(f"size {size} is not a positive number of pixels; pass the model's image size, e.g. 1024")
    resized = np.asarray(Image.fromarray(rgb).resize((size, size)))  # no filter named: sam2 names none
    return np.ascontiguousarray((resized / 255.0).astype(np.float32).transpose(2, 0, 1))
