"""Track objects through a video with a SAM 2 bundle and save every frame's masks.

    python -m runtime.track BUNDLE VIDEO --out DIR --point 0,320,240 [--box 0,100,80,500,400,2] [--mask 5,m.png,3]
                            [--format png|coco] [--overlay tracked.mp4] [--reverse] [--start F] [--max-frames N]
    python -m runtime.track BUNDLE VIDEO --out DIR ...the same prompts and options... --resume

VIDEO is a folder of frames (sam2's 00000.jpg, 00001.jpg, ...) or a video file (PyAV). Prompts:
  --point FRAME,X,Y[,OBJ[,LABEL]]   a click in pixels; OBJ the object id (default 1), LABEL 1 foreground
                                    (default) or 0 background; several on one frame and object go together
  --box FRAME,X0,Y0,X1,Y1[,OBJ]     a box in pixels (with clicks on its frame and object, if any)
  --mask FRAME,PATH[,OBJ]           a mask image of the frames' size, nonzero inside (a DAVIS-style palette
                                    PNG works: index 0 is outside)
Tracking runs from --start (default: the first prompted frame; with --reverse the last) over at most
--max-frames frames, the start frame among them (SAM2VideoPredictor's max_frame_num_to_track is one less).

What DIR holds:
  masks/<frame name>/<object id>.png   --format png: one 0/255 mask per frame and object
  records/<frame name>.json            --format coco: each frame's records, as they are made
  masks.json                           --format coco: every record, COCO RLE, written when the run ends
  progress.json                        the run: its bundle, video, prompts, options, last finished frame
  tracker-state-<frame>.npz            the tracker's memory after that frame, for --resume

Every file appears under its name only once complete (written under a temporary name, then renamed);
a frame's outputs, then the tracker's state, then progress.json are written after each frame, so a run
that is stopped (Ctrl-C, a crash, a lost machine) continues where it stopped with --resume and the
same arguments, and ends with what one uninterrupted run gives. --max-frames, --overlay and --fps may
change on resume (a run can go further than it first went); so may --backend, at the price of that
backend's own float rounding on the frames still to come.

Exit status: 0 done (one summary line on stdout); 2 bad input, refused before any tracking with an
"error:" line naming the fix; 1 an error part-way (the finished frames are kept: fix it, then --resume);
130 interrupted (Ctrl-C; --resume continues).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import amg
from .atomic import (PARTIAL, OutputError, atomic_write, check_output_file, check_writable_parent, remove,
                     stale_leftovers, temporary_name)
from .backends import registry
from .bundle import SEAL, BundleError, open_bundle
from .mask_overlay import draw_masks
from .prompts import PromptError, check_box, check_points
from .video_frames import WRITE_FORMATS, frame_paths, open_video, write_video

try:
    from tqdm import tqdm
except ImportError:  # tqdm comes with the compress extra; the base install tracks without a progress bar
    tqdm = None

PROGRESS_FILE = "progress.json"
PROGRESS_FORMAT = "samedge.track"
PROGRESS_VERSION = 1
MASKS_DIR = "masks"  # --format png
RECORDS_DIR = "records"  # --format coco: one file per finished frame, gathered into COCO_FILE
COCO_FILE = "masks.json"
STATE_PREFIX, STATE_SUFFIX = "tracker-state-", ".npz"
FORMATS = ("png", "coco")
PROGRESS_KEYS = ("command", "bundle", "video", "prompts", "options", "backend", "last_finished", "state")
# What --resume must find unchanged besides the bundle, the video and the prompts: these options decide
# which masks the saved frames hold. --max-frames, --overlay, --fps and --backend may differ.
IDENTITY_OPTIONS = ("format", "reverse", "start")


class TrackError(ValueError):
    """Arguments, prompts or an --out folder runtime.track cannot work with, and the fix."""


# ---------------------------------------------------------------- prompts

@dataclass
class Prompt:
    """Every prompt for one object on one frame: clicks and a box go in one call, a mask alone."""

    frame: int
    obj: int
    points: list = field(default_factory=list)  # [[x, y], ...]
    labels: list = field(default_factory=list)
    box: list | None = None
    mask: np.ndarray | None = None  # bool [H, W]
    mask_sha256: str | None = None  # of the mask's pixels, not its file: a copy elsewhere is the same prompt
    given: list = field(default_factory=list)  # the option texts, for messages

    def record(self) -> dict:
        """What progress.json keeps, and what --resume compares."""
        if self.mask is not None:
            return {"frame": self.frame, "object": self.obj, "mask_sha256": self.mask_sha256}
        return {"frame": self.frame, "object": self.obj, "points": self.points, "labels": self.labels,
                "box": self.box}


def _integer(value: str, what: str, given: str, least: int = 0) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{given}: {what} {value!r} is not a whole number") from None
    if number < least:
        raise argparse.ArgumentTypeError(f"{given}: {what} {number} is below {least}")
    return number


def _number(value: str, what: str, given: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{given}: {what} {value!r} is not a number") from None
    if not np.isfinite(number):
        raise argparse.ArgumentTypeError(f"{given}: {what} {value!r} is not a finite number")
    return number


def parse_point(text: str) -> dict:
    """FRAME,X,Y[,OBJ[,LABEL]]; argparse's refusal names the option, so its messages start with the text."""
    parts = text.split(",")
    if len(parts) not in (3, 4, 5):
        raise argparse.ArgumentTypeError(f"{text}: give FRAME,X,Y[,OBJ[,LABEL]] (3 to 5 values), got "
                                         f"{len(parts)}; e.g. --point 0,320,240 or --point 0,320,240,2,0")
    label = _integer(parts[4], "LABEL", text) if len(parts) == 5 else 1
    if label not in (0, 1):
        raise argparse.ArgumentTypeError(f"{text}: LABEL {label} is neither 1 (foreground) nor 0 (background)")
    return {"frame": _integer(parts[0], "FRAME", text), "obj": _integer(parts[3], "OBJ", text) if len(parts) > 3
            else 1, "point": [_number(parts[1], "X", text), _number(parts[2], "Y", text)], "label": label,
            "text": f"--point {text}"}


def parse_box(text: str) -> dict:
    """FRAME,X0,Y0,X1,Y1[,OBJ]"""
    parts = text.split(",")
    if len(parts) not in (5, 6):
        raise argparse.ArgumentTypeError(f"{text}: give FRAME,X0,Y0,X1,Y1[,OBJ] (5 or 6 values), got "
                                         f"{len(parts)}; e.g. --box 0,100,80,500,400")
    return {"frame": _integer(parts[0], "FRAME", text), "obj": _integer(parts[5], "OBJ", text) if len(parts) > 5
            else 1, "box": [_number(value, name, text) for value, name in zip(parts[1:5], ("X0", "Y0", "X1", "Y1"))],
            "text": f"--box {text}"}


def parse_mask(text: str) -> dict:
    """FRAME,PATH[,OBJ]; PATH may hold commas, so a last part of digits alone is the object id."""
    frame, _, rest = text.partition(",")
    if not rest:
        raise argparse.ArgumentTypeError(f"{text}: give FRAME,PATH[,OBJ]; e.g. --mask 0,first.png or "
                                         "--mask 0,first.png,2")
    path, _, obj = rest.rpartition(",")
    if not (path and obj.isdigit()):
        path, obj = rest, "1"
    return {"frame": _integer(frame, "FRAME", text), "obj": int(obj), "path": Path(path), "text": f"--mask {text}"}


def read_mask(path: Path, video_hw: tuple[int, int], option: str) -> np.ndarray:
    """A mask image as bool [H, W]: nonzero inside (any colour channel; a palette image's index)."""
    try:
        with Image.open(path) as image:
            image.load()
            bands = image.getbands()
            pixels = np.asarray(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise TrackError(f"{option}: cannot read {path} as an image ({err}); pass a mask image such as a PNG, "
                         "nonzero inside the object") from None
    if pixels.ndim == 3:  # the colour channels decide; alpha only says how the file is shown
        colour = [index for index, band in enumerate(bands) if band not in ("A", "a")] or [0]
        pixels = pixels[..., colour]
        mask = pixels.any(axis=-1)
    else:
        mask = pixels != 0
    if mask.shape != tuple(video_hw):
        raise TrackError(f"{option}: the mask is {mask.shape[1]}x{mask.shape[0]} but the video's frames are "
                         f"{video_hw[1]}x{video_hw[0]}; resize it to the frames' size (nearest neighbour)")
    return mask


def gather_prompts(args, num_frames: int, video_hw) -> list[Prompt]:
    """The prompts, one Prompt per object and frame in (object, frame) order, each checked against the video."""
    if not (args.point or args.box or args.mask):
        raise TrackError("no prompt: give at least one --point FRAME,X,Y, --box FRAME,X0,Y0,X1,Y1 or "
                         "--mask FRAME,PATH for the object(s) to track")
    prompts: dict[tuple[int, int], Prompt] = {}

    def prompt_for(given: dict) -> Prompt:
        if given["frame"] >= num_frames:
            raise TrackError(f"{given['text']}: frame {given['frame']} is outside the video (frames 0.."
                             f"{num_frames - 1}); prompt a frame of the video")
        prompt = prompts.setdefault((given["obj"], given["frame"]), Prompt(given["frame"], given["obj"]))
        prompt.given.append(given["text"])
        return prompt

    def refuse_mix(prompt: Prompt, text: str) -> None:
        raise TrackError(f"{text}: object {prompt.obj} on frame {prompt.frame} already has "
                         f"{' and '.join(prompt.given[:-1])}; a mask is the whole answer, so give it a mask alone "
                         "or clicks and a box, not both")

    for given in args.point:
        prompt = prompt_for(given)
        if prompt.mask is not None:
            refuse_mix(prompt, given["text"])
        try:
            check_points([given["point"]], [given["label"]], video_hw)
        except PromptError as err:
            raise TrackError(f"{given['text']}: {err}") from None
        prompt.points.append(given["point"])
        prompt.labels.append(given["label"])
    for given in args.box:
        prompt = prompt_for(given)
        if prompt.mask is not None:
            refuse_mix(prompt, given["text"])
        if prompt.box is not None:
            raise TrackError(f"{given['text']}: object {prompt.obj} on frame {prompt.frame} already has a box; give "
                             "one box per object and frame (another object: add its id, FRAME,X0,Y0,X1,Y1,OBJ)")
        try:
            check_box(given["box"], video_hw)
        except PromptError as err:
            raise TrackError(f"{given['text']}: {err}") from None
        prompt.box = given["box"]
    for given in args.mask:
        prompt = prompt_for(given)
        if prompt.points or prompt.box is not None or prompt.mask is not None:
            refuse_mix(prompt, given["text"])
        prompt.mask = read_mask(given["path"], video_hw, given["text"])
        prompt.mask_sha256 = hashlib.sha256(np.packbits(prompt.mask).tobytes()).hexdigest()
    return [prompts[key] for key in sorted(prompts)]


def add_prompts(predictor, state, prompts: list[Prompt]) -> None:
    for prompt in prompts:
        if prompt.mask is not None:
            predictor.add_new_mask(state, prompt.frame, prompt.obj, prompt.mask)
        else:
            predictor.add_new_points_or_box(state, prompt.frame, prompt.obj, points=prompt.points or None,
                                            labels=prompt.labels or None, box=prompt.box)


# ---------------------------------------------------------------- identities

def _sha256_files(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def video_identity(path: Path, frames) -> dict:
    """The video's files by content (a copied or moved video is the same video), its size and frame count."""
    files = frame_paths(path) if path.is_dir() else [path]
    return {"path": str(path.resolve()), "frames": len(frames), "width": frames.width, "height": frames.height,
            "sha256": _sha256_files(files)}


def bundle_identity(path: Path) -> dict:
    """The bundle by its sealed manifest, which holds every model file's hash; refuses one that cannot track."""
    bundle = open_bundle(path, verify=False)  # the manifest alone; the tracker checks every file when it opens
    if bundle.tracking is None:
        raise BundleError(f"{path} cannot track: it is not a SAM 2 bundle (its manifest has no tracking section). "
                          "Video tracking needs a SAM 2 / 2.1 bundle: python -m export.build --target cpu "
                          "--checkpoint sam2.1_hiera_tiny.pt --out bundles/sam2.1_hiera_t-cpu")
    return {"path": str(Path(path).resolve()), "manifest_sha256": bundle.manifest[SEAL]["sha256"]}


# ---------------------------------------------------------------- the frames to track

def frame_plan(start: int, max_frames: int | None, num_frames: int, reverse: bool) -> list[int]:
    """The frames a run covers, in tracking order: from `start`, at most `max_frames` of them."""
    if reverse:
        end = 0 if max_frames is None else max(start - max_frames + 1, 0)
        return list(range(start, end - 1, -1))
    end = num_frames - 1 if max_frames is None else min(start + max_frames - 1, num_frames - 1)
    return list(range(start, end + 1))


def finished_frames(start: int, last: int | None, reverse: bool) -> list[int]:
    """The frames saved so far, in video order."""
    if last is None:
        return []
    return list(range(last, start + 1)) if reverse else list(range(start, last + 1))


def track(predictor, state, frames: list[int], reverse: bool):
    """(frame, obj_ids, masks bool [objects, H, W]) for `frames`, consecutive in tracking order."""
    if reverse and frames == [0]:
        # propagate_in_video in reverse from frame 0 tracks nothing (as sam2's): a resumed reverse run
        # whose last frame is 0 tracks it alone. The memory was prepared when the run began.
        yield 0, state.obj_ids, predictor.track_frame(state, 0, reverse=True)[:, 0] > 0
        return
    for frame_idx, obj_ids, logits in predictor.propagate_in_video(
            state, start_frame_idx=frames[0], max_frame_num_to_track=len(frames) - 1, reverse=reverse):
        yield frame_idx, list(obj_ids), logits[:, 0] > 0


# ---------------------------------------------------------------- outputs

def _replace_atomically(target: Path, write, directory: bool = False) -> None:
    """Write `target` (a file, or a folder filled by `write`) under a temporary name, then rename it.
    A previous `target` is replaced: a frame tracked again after a stop gives the same masks."""
    tmp = temporary_name(target, PARTIAL)
    try:
        if directory:
            tmp.mkdir()
        write(tmp)
        if directory and target.exists():
            remove(target)  # a folder cannot be renamed over a full one
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            remove(tmp)


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, format="PNG")


class PngMasks:
    """DIR/masks/<frame name>/<object id>.png, 0/255; a frame's folder appears whole."""

    def __init__(self, out: Path):
        self.folder = out / MASKS_DIR

    def where(self) -> str:
        return f"{self.folder}{os.sep} (one PNG per frame and object)"

    def write_frame(self, index: int, name: str, obj_ids: list, masks: np.ndarray) -> None:
        def fill(tmp: Path) -> None:
            for obj, mask in zip(obj_ids, masks):
                write_mask_png(tmp / f"{obj}.png", mask)

        self.folder.mkdir(exist_ok=True)
        _replace_atomically(self.folder / name, fill, directory=True)

    def read_frame(self, name: str, obj_ids: list) -> list[np.ndarray]:
        masks = []
        for obj in obj_ids:
            with Image.open(self.folder / name / f"{obj}.png") as image:
                masks.append(np.asarray(image) > 127)
        return masks

    def finish(self, finished: list[int], names: list[str], obj_ids: list, about: dict) -> None:
        """Nothing to gather: every frame's files are final."""


class CocoMasks:
    """DIR/records/<frame name>.json per frame as it is tracked; DIR/masks.json gathers them at the end."""

    def __init__(self, out: Path):
        self.folder = out / RECORDS_DIR
        self.path = out / COCO_FILE

    def where(self) -> str:
        return f"{self.path} (COCO RLE)"

    def write_frame(self, index: int, name: str, obj_ids: list, masks: np.ndarray) -> None:
        records = []
        for obj, mask in zip(obj_ids, masks):
            rle = amg.mask_to_rle(mask)  # runtime.everything's path: uncompressed RLE, then COCO's
            records.append({"frame_index": index, "frame_name": name, "object_id": obj,
                            "segmentation": amg.coco_rle(rle), "area": amg.rle_area(rle),
                            "bbox": amg.xyxy_to_xywh(amg.masks_to_boxes(mask))})
        self.folder.mkdir(exist_ok=True)
        _replace_atomically(self.folder / f"{name}.json", lambda tmp: tmp.write_text(json.dumps(records)))

    def _records(self, name: str) -> list[dict]:
        return json.loads((self.folder / f"{name}.json").read_text())

    def read_frame(self, name: str, obj_ids: list) -> list[np.ndarray]:
        by_object = {record["object_id"]: record for record in self._records(name)}
        return [amg.segmentation_to_mask(by_object[obj]["segmentation"]) for obj in obj_ids]

    def finish(self, finished: list[int], names: list[str], obj_ids: list, about: dict) -> None:
        records = [record for index in finished for record in self._records(names[index])]
        report = {**about, "frames": [{"index": index, "name": names[index]} for index in finished],
                  "objects": obj_ids, "masks": records}
        atomic_write(self.path, lambda tmp: Path(tmp).write_text(json.dumps(report)))


def write_overlay(path: Path, frames, outputs, finished: list[int], obj_ids: list, fps: float) -> None:
    """The finished frames in video order, each object tinted its own colour (the same in every frame)."""
    def pictures():
        for index in finished:
            masks = outputs.read_frame(frames.names[index], obj_ids)
            yield np.asarray(draw_masks(frames[index], masks))

    write_video(path, pictures(), fps=fps)


# ---------------------------------------------------------------- the --out folder

def read_progress(out: Path) -> dict:
    path = out / PROGRESS_FILE
    try:
        progress = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrackError(f"{path} cannot be read ({err}): the run's record is damaged; start again with a new "
                         "--out (or delete this one)") from None
    if not (isinstance(progress, dict) and progress.get("format") == PROGRESS_FORMAT):
        raise TrackError(f"{path} is not a runtime.track progress file; choose another --out")
    if progress.get("version") != PROGRESS_VERSION:
        raise TrackError(f"{path} was written by another samedge (progress version {progress.get('version')}, this "
                         f"one reads {PROGRESS_VERSION}); finish it with that samedge, or start again with a new --out")
    missing = [key for key in PROGRESS_KEYS if key not in progress]
    if missing:
        raise TrackError(f"{path} lacks {', '.join(missing)}: the run's record is damaged; start again with a new "
                         "--out (or delete this one)")
    return progress


def check_out_folder(out: Path, resume: bool) -> dict | None:
    """The run in `out` to resume (None: a new run), or a refusal saying what to do instead."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; name a folder for the masks")
    check_writable_parent(out / PROGRESS_FILE, "--out")
    has_run = (out / PROGRESS_FILE).is_file()
    if resume:
        if not has_run:
            raise TrackError(f"--resume: {out} holds no run to resume (no {PROGRESS_FILE}); drop --resume to start "
                             "one, or name the --out of the run to continue")
        return read_progress(out)
    if has_run:
        raise TrackError(f"--out {out} holds a previous run ({PROGRESS_FILE}); add --resume to continue it with the "
                         "same arguments, or choose another --out")
    if out.is_dir() and any(out.iterdir()):
        raise TrackError(f"--out {out} is not empty; choose a new or empty folder (the masks of every frame go there)")
    return None


def check_same_run(progress: dict, run: dict, out: Path) -> None:
    """--resume continues only the run the saved frames belong to."""
    then = " ".join(progress.get("command", []))
    fix = f"give the same arguments as that run ({then}), or choose a new --out for a new run"
    if progress["bundle"]["manifest_sha256"] != run["bundle"]["manifest_sha256"]:
        raise TrackError(f"--resume: {out} was tracked with another bundle ({progress['bundle']['path']}); {fix}")
    old_video, new_video = progress["video"], run["video"]
    if any(old_video[key] != new_video[key] for key in ("sha256", "frames", "width", "height")):
        raise TrackError(f"--resume: {out} was tracked on another video ({old_video['path']}, {old_video['frames']} "
                         f"frames of {old_video['width']}x{old_video['height']}), or its frames changed since; {fix}")
    if progress["prompts"] != run["prompts"]:
        raise TrackError(f"--resume: {out} was tracked with other prompts; {fix}")
    changed = [name for name in IDENTITY_OPTIONS if progress["options"].get(name) != run["options"][name]]
    if changed:
        shown = ", ".join(f"--{name} {progress['options'].get(name)} then, {run['options'][name]} now"
                          for name in changed)
        raise TrackError(f"--resume: {out} was tracked with other options ({shown}); {fix}")


def sweep_leftovers(out: Path) -> None:
    """Temporary files and folders of runs in `out` that were killed (their process is gone)."""
    host = f".{socket.gethostname()}."
    for folder in (out, out / MASKS_DIR, out / RECORDS_DIR):
        if not folder.is_dir():
            continue
        targets = {entry.name[1:entry.name.index(host)] for entry in folder.iterdir()
                   if entry.name.startswith(".") and entry.name.endswith(PARTIAL) and host in entry.name}
        for target in targets:
            for leftover in stale_leftovers(folder / target, PARTIAL):
                remove(leftover)


def state_path(out: Path, frame: int) -> Path:
    return out / f"{STATE_PREFIX}{frame:05d}{STATE_SUFFIX}"


def remove_other_states(out: Path, keep: Path | None) -> None:
    """Tracker states but the one progress.json names: older ones, and one saved just before a stop."""
    for path in out.glob(f"{STATE_PREFIX}*{STATE_SUFFIX}"):
        if path != keep:
            path.unlink(missing_ok=True)


# ---------------------------------------------------------------- the command

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime.track", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="a SAM 2 / 2.1 bundle (python -m export.build)")
    parser.add_argument("video", type=Path, help="a folder of frames or a video file")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="the folder for the masks and the run's progress")
    parser.add_argument("--point", action="append", default=[], type=parse_point, metavar="FRAME,X,Y[,OBJ[,LABEL]]",
                        help="a click (repeatable; see above)")
    parser.add_argument("--box", action="append", default=[], type=parse_box, metavar="FRAME,X0,Y0,X1,Y1[,OBJ]",
                        help="a box (repeatable, one per object and frame)")
    parser.add_argument("--mask", action="append", default=[], type=parse_mask, metavar="FRAME,PATH[,OBJ]",
                        help="a mask image (repeatable, one per object and frame)")
    parser.add_argument("--format", choices=FORMATS, default="png",
                        help="png: DIR/masks/<frame>/<object>.png; coco: DIR/masks.json (COCO RLE, needs pycocotools)")
    parser.add_argument("--overlay", type=Path, metavar="VIDEO",
                        help=f"a video of the tracked frames, each object tinted ({' '.join(WRITE_FORMATS)})")
    parser.add_argument("--fps", type=float, default=10.0, help="the overlay's frame rate (default 10)")
    parser.add_argument("--backend", choices=registry.choices(), default="auto",
                        help="auto: as runtime.Session opens by default (TensorRT engines, else the faster CPU engine)")
    parser.add_argument("--reverse", action="store_true", help="track backwards in time")
    parser.add_argument("--start", type=int, metavar="FRAME",
                        help="the first frame to track (default: the first prompted frame; the last with --reverse)")
    parser.add_argument("--max-frames", type=int, metavar="N", help="track at most N frames, the start frame included")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out after its last finished frame (the same arguments)")
    return parser


def _check_options(args) -> None:
    if args.max_frames is not None and args.max_frames < 1:
        raise TrackError(f"--max-frames {args.max_frames}: track at least 1 frame (leave it out to track to the end)")
    if not (np.isfinite(args.fps) and args.fps > 0):
        raise TrackError(f"--fps {args.fps:g} is not a positive number of frames per second; e.g. --fps 10")
    if args.format == "coco":  # refused now, not after the frames are tracked
        amg.import_extra("pycocotools.mask", "--format coco", "use --format png")
    if args.overlay is not None:
        check_output_file(args.overlay, "--overlay")
        if args.overlay.suffix.lower() not in WRITE_FORMATS:
            raise TrackError(f"--overlay {args.overlay}: the overlay is a video, so end its name with one of "
                             f"{' '.join(WRITE_FORMATS)} (e.g. tracked.mp4)")
        if importlib.util.find_spec("av") is None:
            raise TrackError("--overlay needs PyAV to write the video, which is not installed: pip install av "
                             "(or leave --overlay out)")


def _start_frame(args, prompts: list[Prompt], num_frames: int) -> int:
    if args.start is None:
        frames = [prompt.frame for prompt in prompts]
        start = max(frames) if args.reverse else min(frames)
    else:
        start = args.start
        if not 0 <= start < num_frames:
            raise TrackError(f"--start {start} is outside the video (frames 0..{num_frames - 1})")
    if args.reverse and start == 0:
        raise TrackError("--reverse from frame 0: there is no earlier frame to track; prompt a later frame, give "
                         "--start a later frame, or drop --reverse")
    return start


class _Stopped(Exception):
    """Tracking stopped part-way by an error; the frames before it are saved (the cause says why)."""


def _run(args, run: dict, progress: dict | None, frames, prompts: list[Prompt], todo: list[int], outputs):
    """Track the frames `todo`, saving each as it is done. Returns (backend, object ids, last finished frame)."""
    from .video import VideoPredictor  # the tracker's modules load only when there is tracking to do

    out = args.out
    last = progress["last_finished"] if progress else None
    obj_ids = sorted({prompt.obj for prompt in prompts})
    if not todo:  # every frame asked for is saved already
        return progress["backend"], obj_ids, last
    out.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(out)
    saved_state = out / progress["state"] if progress and progress["state"] else None
    remove_other_states(out, saved_state)
    with VideoPredictor(args.bundle, backend=args.backend) as predictor:
        record = {**run, "backend": predictor.session.backend.name, "last_finished": last,
                  "state": saved_state.name if saved_state else None}

        def save_progress() -> None:
            atomic_write(out / PROGRESS_FILE, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))

        if saved_state is None:  # a new run (or one stopped before its first frame): the prompts start it
            state = predictor.init_state(frames)
            add_prompts(predictor, state, prompts)
            save_progress()  # before any frame's file: --out holds this run from now on
        else:
            state = predictor.load_state(saved_state, frames)
        obj_ids = list(state.obj_ids)
        done = len(finished_frames(run["options"]["start"], last, args.reverse))
        bar = tqdm(total=done + len(todo), initial=done, desc="track", unit="frame", file=sys.stderr) if tqdm else None
        try:
            for frame_idx, ids, masks in track(predictor, state, todo, args.reverse):
                outputs.write_frame(frame_idx, frames.names[frame_idx], ids, masks)
                # The state first, under its frame's name, then progress.json naming it: progress.json
                # always names a state that holds exactly the frames it says are finished.
                new_state = state_path(out, frame_idx)
                predictor.save_state(state, new_state)
                record.update(last_finished=frame_idx, state=new_state.name)
                save_progress()
                remove_other_states(out, new_state)
                last = frame_idx
                if bar is not None:
                    bar.update()
        except (ValueError, RuntimeError, OSError) as err:  # a damaged frame, a full disk, a failing backend
            raise _Stopped() from err
        finally:
            if bar is not None:
                bar.close()
        return predictor.session.backend.name, obj_ids, last


def _prepare(args, frames) -> tuple[dict, dict | None, list[Prompt]]:
    """The run's record (what progress.json keeps), the run to resume (or None) and the prompts; every
    refusal comes here, before the bundle is loaded."""
    progress = check_out_folder(args.out, args.resume)
    prompts = gather_prompts(args, len(frames), (frames.height, frames.width))
    start = _start_frame(args, prompts, len(frames))
    run = {"format": PROGRESS_FORMAT, "version": PROGRESS_VERSION,
           "command": ["python -m runtime.track", *(sys.argv[1:] if args.argv is None else map(str, args.argv))],
           "bundle": bundle_identity(args.bundle), "video": video_identity(args.video, frames),
           "prompts": [prompt.record() for prompt in prompts],
           "options": {"format": args.format, "reverse": args.reverse, "start": start}}
    if progress is not None:
        check_same_run(progress, run, args.out)
        run["command"] = progress["command"]  # the run's first command: what a later refusal shows to repeat
        if progress["state"] and not (args.out / progress["state"]).is_file():
            raise TrackError(f"--resume: {args.out / PROGRESS_FILE} names {progress['state']}, the tracker's memory "
                             "after its last frame, which is gone; start again with a new --out")
    return run, progress, prompts


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    args.argv = argv
    try:
        _check_options(args)
        frames = open_video(args.video)
    except (ValueError, RuntimeError) as err:  # TrackError, OutputError, VideoError, MaskGeneratorError
        print(f"error: {err}", file=sys.stderr)
        return 2
    with frames:
        try:
            run, progress, prompts = _prepare(args, frames)
        except (ValueError, RuntimeError) as err:  # TrackError, OutputError, BundleError, PromptError
            print(f"error: {err}", file=sys.stderr)
            return 2
        start, last = run["options"]["start"], progress["last_finished"] if progress else None
        plan = frame_plan(start, args.max_frames, len(frames), args.reverse)
        todo = plan if last is None else plan[plan.index(last) + 1:] if last in plan else []
        outputs = PngMasks(args.out) if args.format == "png" else CocoMasks(args.out)
        try:
            backend, obj_ids, last = _run(args, run, progress, frames, prompts, todo, outputs)
            finished = finished_frames(start, last, args.reverse)
            outputs.finish(finished, frames.names, obj_ids, {key: run[key] for key in ("bundle", "video", "options")})
            if args.overlay is not None:
                write_overlay(args.overlay, frames, outputs, finished, obj_ids, args.fps)
        except KeyboardInterrupt:
            print(f"\ninterrupted: the finished frames are saved in {args.out}; the same command with --resume "
                  "continues", file=sys.stderr)
            return 130
        except _Stopped as stop:
            print(f"error: {stop.__cause__}; the finished frames are saved in {args.out}: fix it and run the same "
                  "command with --resume to continue", file=sys.stderr)
            return 1
        except (ValueError, RuntimeError) as err:  # the bundle or the backend refused
            print(f"error: {err}", file=sys.stderr)
            return 2
        except OSError as err:  # writing masks.json or the overlay (a full disk, a lost mount)
            print(f"error: {err}; the tracked frames are saved in {args.out}: fix it and run the same command with "
                  "--resume to write the rest", file=sys.stderr)
            return 1
    this_run = f", {len(todo)} this run" if progress is not None else ""
    overlay = f", overlay {args.overlay}" if args.overlay is not None else ""
    print(f"{len(finished)} frame(s) ({finished[0]}..{finished[-1]}{this_run}), object(s) "
          f"{', '.join(map(str, obj_ids))}, backend {backend} -> {outputs.where()}{overlay}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
