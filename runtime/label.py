"""Label a dataset with a bundle: every mask of every image (or one mask per given box), as COCO JSON.

    python -m runtime.label BUNDLE INPUT... --out DIR [--boxes FILE] [--ray [--workers N]] [--shard-size K]

INPUT: a folder (its images, subfolders included, sorted by path), a quoted glob ("data/*/*.jpg"), a
.txt manifest (an image path a line, relative to it; # comments) or an image; several in the order given.
`file_name`: the path below the folder (or the glob's leading folder), the manifest's line, or a lone
image's name; unique. Image ids are 1, 2, ... in that order, the same on every run over the same inputs.

Segment-everything by default (runtime.everything.MaskGenerator; the demo bundle keeps masks with
--pred-iou-thresh 0.6 --stability-score-thresh 0.8). --boxes FILE: one mask per box instead
(Session.predict_batch, multimask_output=False), XYXY pixels by file_name: {"<file_name>": [[x0, y0,
x1, y1], ...], ...}; each box's annotation keeps it as "prompt_box", in order; unlisted images get none.

DIR holds (each file written under a temporary name, then renamed):
  run.json                     bundle, settings and input list; a rerun with other ones is refused
  parts/<image index>.json     one image's result, written as soon as it is done
  shards/shard-00000.json ...  COCO files of --shard-size images each, by order (their parts then go)
  annotations.json             the shards merged: images, annotations (ids 1..n; a shard's from 1), categories
Annotations: COCO RLE "segmentation", "bbox" (XYWH), "area", "score" (the predicted IoU); for everything
also segment_anything's predicted_iou, stability_score, point_coords, crop_box. A rerun skips finished
shards and images: a crash, Ctrl-C or a killed worker loses only the images in flight.

--ray: Ray Data, --workers actors with one Session each (1 CPU each); an actor that dies is restarted and
its lost work run again. annotations.json is the same, byte for byte, as without --ray.
Exit status: 0 done; 2 refused before any work ("error:" names the fix); 1 an image failed part-way
(finished ones are kept: fix it and rerun the same command); 130 interrupted (rerun to resume).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image

from . import amg
from .atomic import atomic_write, remove
from .backends import registry
from .bundle import open_bundle
from .everything import MaskGenerator
from .images import load_image
from .prompts import PromptError, check_box
from .session import Session

try:
    from tqdm import tqdm
except ImportError:  # the base install labels without a progress bar
    tqdm = None

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
CATEGORIES = [{"id": 1, "name": "object"}]
MAX_BLOCKS = 10_000  # Ray Data blocks; more images share them
BOXES_FORMAT = 'expected {"<image file_name>": [[x0, y0, x1, y1], ...], ...}'


class LabelError(ValueError):
    """Inputs, settings or an output folder the labeller refuses, with the fix."""


class ImageFailed(LabelError):
    """An image that failed part-way through a run; the finished ones are kept."""


@dataclass(frozen=True)
class Item:
    index: int  # place in the input list; the image id is index + 1
    path: str
    file_name: str
    boxes: list | None  # None: segment everything


@dataclass(frozen=True)
class Summary:
    images: int  # in the inputs
    labelled: int  # by this run
    skipped: int  # finished by an earlier run
    shards: int
    annotations: int
    out: Path


def list_images(inputs) -> list[tuple[str, Path]]:
    """(file_name, path) of every input image, in the documented order."""
    found = []
    for given in map(str, inputs):
        path, before = Path(given), len(found)
        if path.is_dir():
            found += sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if _is_image(p))
        elif path.suffix.lower() == ".txt" and path.is_file():
            for name in (line.strip() for line in path.read_text().splitlines()):
                if name and not name.startswith("#"):
                    if not (path.parent / name).is_file():
                        raise LabelError(f"manifest {path} lists {name}, which is not a file ({path.parent / name}); "
                                         "fix the line (paths are relative to the manifest) or remove it")
                    found.append((name, path.parent / name))
        elif glob.has_magic(given):
            fixed = next((i for i, part in enumerate(path.parts) if glob.has_magic(part)))
            base = Path(*path.parts[:fixed]) if fixed else Path()
            matches = sorted(Path(m) for m in glob.glob(given, recursive=True) if _is_image(Path(m)))
            found += [(m.relative_to(base).as_posix(), m) for m in matches]
        elif path.is_file():
            found.append((path.name, path))
        else:
            raise LabelError(f"INPUT {given} is not a folder, a .txt manifest, a glob pattern or an image file; "
                             "check the path")
        if len(found) == before:
            raise LabelError(f"no images found in {given} (looked for {' '.join(IMAGE_SUFFIXES)}); check the path")
    seen = {}
    for name, path in found:
        if name in seen:
            raise LabelError(f"two input images have the file_name {name!r} ({seen[name]} and {path}); label them "
                             "into separate --out folders, or list them in a .txt manifest by distinct paths")
        seen[name] = path
    return found


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def read_boxes(path, found: list[tuple[str, Path]]) -> dict[str, list[list[float]]]:
    """The --boxes file, checked before any work: every key an input's file_name, every box inside its image."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LabelError(f"boxes file {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LabelError(f"boxes file {path} cannot be read as JSON ({err}); {BOXES_FORMAT}") from None
    if not isinstance(data, dict):
        raise LabelError(f"boxes file {path} holds a JSON {type(data).__name__}; {BOXES_FORMAT}")
    paths = dict(found)
    for name, boxes in data.items():
        if name not in paths:
            raise LabelError(f"boxes file {path} has boxes for {name!r}, which is not among the {len(paths)} input "
                             f"images (file_names such as {found[0][0]!r}: paths below the folder given); fix the "
                             "key, add the image to the inputs or remove the entry")
        if not isinstance(boxes, list):
            raise LabelError(f"boxes file {path}: {name!r} holds a {type(boxes).__name__}; {BOXES_FORMAT}")
        height_width = _upright_size(paths[name])
        for number, box in enumerate(boxes):
            try:
                check_box(box, height_width)
            except PromptError as err:
                raise LabelError(f"boxes file {path}: box {number} of {name!r}: {err}") from None
    return {name: [[float(v) for v in box] for box in boxes] for name, boxes in data.items()}


def _upright_size(path: Path) -> tuple[int, int]:
    """An image's height and width as shown (after its EXIF rotation), from its header alone."""
    try:
        with Image.open(path) as image:
            turned = image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8)
            return image.size if turned else image.size[::-1]
    except (OSError, SyntaxError, ValueError) as err:
        raise LabelError(f"{path} is not a readable image ({err}); re-save it, or leave it out of the inputs") from None


class Labeller:
    """One Session labelling items: in this process, or as a Ray Data actor (called on a batch)."""

    def __init__(self, bundle: str, backend: str, out: str, settings: dict):
        self.session = Session(bundle, backend=backend)
        self.generator = MaskGenerator(self.session, **settings, output_mode="coco_rle",
                                       show_progress=False) if settings else None  # None: --boxes
        self.out = Path(out)

    def __call__(self, batch: dict) -> dict:
        items = [Item(**json.loads(text)) for text in batch["item"]]
        return {"index": np.array([item.index for item in items]),
                "error": np.array([self.label(item) for item in items], dtype=object)}

    def label(self, item: Item) -> str:
        """Label one image into its part file, unless an earlier attempt did; "" or what went wrong."""
        part = _part_path(self.out, item.index)
        if part.exists():  # done by a worker killed before it could report
            return ""
        try:
            image = load_image(item.path)
            found = self._everything(image) if item.boxes is None else self._boxed(image, item.boxes)
        except ValueError as err:  # ImageError, PromptError, MaskGeneratorError
            return str(err) if item.path in str(err) else f"{item.path}: {err}"
        image_id = item.index + 1
        _write_json(part, {"image": {"id": image_id, "file_name": item.file_name, "height": image.shape[0],
                                     "width": image.shape[1]},
                           "annotations": [{"image_id": image_id, "category_id": 1, "iscrowd": 0, **a} for a in found]})
        return ""

    def _everything(self, image) -> list[dict]:
        return [{"segmentation": r["segmentation"], "area": r["area"], "bbox": r["bbox"], "score": r["predicted_iou"],
                 **{key: r[key] for key in ("predicted_iou", "stability_score", "point_coords", "crop_box")}}
                for r in self.generator.generate(image)]

    def _boxed(self, image, boxes) -> list[dict]:
        if not boxes:
            return []
        coco = amg.import_extra("pycocotools.mask", "--boxes", "label without --boxes")
        answer = self.session.predict_batch(image, boxes=np.array(boxes), multimask_output=False)
        found = []
        for box, mask, score in zip(boxes, answer.masks[:, 0], answer.scores[:, 0]):
            rle = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
            found.append({"segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()},
                          "area": int(coco.area(rle)), "bbox": [int(v) for v in coco.toBbox(rle)],
                          "score": float(score), "prompt_box": box})
        return found


def _part_path(out: Path, index: int) -> Path:
    return out / "parts" / f"{index:08d}.json"


def _shard_path(out: Path, shard: int) -> Path:
    return out / "shards" / f"shard-{shard:05d}.json"


def _write_json(path: Path, data, indent=None) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=indent)))


def _assemble(out: Path, shard: int, items: list[Item], info: dict) -> None:
    """The shard's COCO file from its images' parts (annotation ids from 1), then the parts go."""
    parts = [json.loads(_part_path(out, item.index).read_text()) for item in items]
    annotations = [{"id": number, **a} for number, a in enumerate((a for p in parts for a in p["annotations"]), 1)]
    _write_json(_shard_path(out, shard), {"info": info, "images": [part["image"] for part in parts],
                                          "annotations": annotations, "categories": CATEGORIES})
    for item in items:
        remove(_part_path(out, item.index))


def _check_run(out: Path, run: dict) -> None:
    """Record the run in out/run.json, or refuse one other than the run recorded there."""
    record = out / "run.json"
    if out.exists() and not out.is_dir():
        raise LabelError(f"--out {out} is a file; name a folder (a new one, or an earlier run's)")
    if record.is_file():
        earlier = json.loads(record.read_text())
        changed = [key if key in ("bundle", "inputs", "boxes") else f"{key} ({earlier[key]} there, {run.get(key)} here)"
                   for key in earlier if run.get(key) != earlier[key]]
        if not changed:
            return
        if _started(out):  # else the run failed before its first image (a backend missing, say): start again
            raise LabelError(f"{out} holds a run with other {', '.join(changed)}; rerun with the same inputs and "
                             "settings to resume it, or choose a new --out to start another")
    elif out.is_dir() and any(out.iterdir()):
        raise LabelError(f"--out {out} is not empty and holds no run.json; choose a new or empty folder")
    _write_json(record, run, indent=2)


def _started(out: Path) -> bool:
    return any(any(folder.glob("*.json")) for folder in (out / "parts", out / "shards") if folder.is_dir())


def label_dataset(bundle, inputs, out, boxes=None, use_ray: bool = False, workers: int = 1, shard_size: int = 100,
                  points_per_side: int = 32, pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                  backend: str = "auto", ray_address: str | None = None, show_progress: bool = True) -> Summary:
    """Label `inputs` (INPUTs, as on the command line) into the folder `out`, as the module's docstring says.
    `boxes`: a boxes file's path, or None to segment everything."""
    out = Path(out)
    if shard_size < 1 or workers < 1 or points_per_side < 1:
        raise LabelError(f"--shard-size, --workers and --points-per-side must be >= 1, got {shard_size}, {workers}, "
                         f"{points_per_side}")
    if workers > 1 and not use_ray:
        raise LabelError(f"--workers {workers} needs --ray; without it one Session labels in this process")
    amg.import_extra("pycocotools.mask", "COCO output", "segment one image at a time with runtime.everything")
    settings = {} if boxes else dict(points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                                     stability_score_thresh=stability_score_thresh)
    found = list_images(inputs)
    by_name = read_boxes(boxes, found) if boxes else None
    items = [Item(index, str(path.absolute()), name, None if by_name is None else by_name.get(name, []))
             for index, (name, path) in enumerate(found)]
    manifest = open_bundle(bundle, verify=False).manifest  # BundleError (with the fix) before any work
    listed = "\n".join(f"{item.file_name}\t{item.path}" for item in items)
    run = {"bundle": _digest(json.dumps(manifest, sort_keys=True)), "backend": backend, "settings": settings,
           "boxes": None if by_name is None else _digest(json.dumps(by_name, sort_keys=True)), "shard_size": shard_size,
           "images": len(items), "inputs": _digest(listed)}
    _check_run(out, run)
    info = {"description": "labelled by samedge: python -m runtime.label", "settings": settings or "boxes"}
    shards = [items[start:start + shard_size] for start in range(0, len(items), shard_size)]
    missing, todo = {}, []
    for shard, members in enumerate(shards):
        if _shard_path(out, shard).exists():
            for item in members:  # left by a run stopped between writing the shard and removing them
                remove(_part_path(out, item.index))
            continue
        left = [item for item in members if not _part_path(out, item.index).exists()]
        missing[shard] = {item.index for item in left}
        todo.extend(left)
        if not left:
            _assemble(out, shard, members, info)
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="label", unit="image", file=sys.stderr,
               disable=not show_progress) if tqdm else None

    def done(index: int, error: str) -> None:
        if error:
            raise ImageFailed(f"{error}. Finished images are kept in {out}: fix the image and rerun the same "
                              "command to resume, or leave it out and label into a new --out")
        shard = index // shard_size
        if index in missing[shard]:  # once, whatever Ray reports
            missing[shard].remove(index)
            if not missing[shard]:
                _assemble(out, shard, shards[shard], info)
            if bar is not None:
                bar.update(1)

    # Absolute paths: a Ray worker's working directory is not necessarily this one.
    labeller_args = dict(bundle=str(Path(bundle).absolute()), backend=backend, out=str(out.absolute()),
                         settings=settings)
    try:
        if todo and use_ray:
            _run_ray(todo, labeller_args, workers, ray_address, done)
        elif todo:
            labeller = Labeller(**labeller_args)
            with labeller.session:
                for item in todo:
                    done(item.index, labeller.label(item))
    finally:
        if bar is not None:
            bar.close()
    count = _merge(out, len(shards), info)
    return Summary(len(items), len(todo), len(items) - len(todo), len(shards), count, out)


def _merge(out: Path, shards: int, info: dict) -> int:
    """Write out/annotations.json from the shards, one shard in memory at a time; the annotations' count."""
    def read(shard: int) -> dict:
        return json.loads(_shard_path(out, shard).read_text())

    def write(tmp: str) -> None:
        nonlocal count
        images = [image for shard in range(shards) for image in read(shard)["images"]]
        with open(tmp, "w") as file:
            file.write(f'{{"info": {json.dumps(info)}, "images": {json.dumps(images)}, "annotations": [')
            for shard in range(shards):
                for annotation in read(shard)["annotations"]:
                    count += 1
                    file.write((", " if count > 1 else "") + json.dumps({**annotation, "id": count}))
            file.write(f'], "categories": {json.dumps(CATEGORIES)}}}')

    count = 0
    atomic_write(out / "annotations.json", write)
    return count


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _run_ray(items: list[Item], labeller_args: dict, workers: int, address: str | None, done) -> None:
    """The items through a pool of `workers` Labeller actors on Ray Data; `done` as each one reports."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise LabelError('--ray needs Ray Data: pip install "ray[data]"; or label without --ray') from None
    started = not ray.is_initialized()
    if started:  # a CPU beyond the workers' for Ray Data's own tasks
        ray.init(address=address, num_cpus=None if address else workers + 1, include_dashboard=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours counts images
        # A block per image (up to MAX_BLOCKS): each one reported, and its shard assembled, as soon as it is done.
        dataset = ray.data.from_items([{"item": json.dumps(asdict(item))} for item in items],
                                      override_num_blocks=min(len(items), MAX_BLOCKS))
        # An actor that dies (a killed worker, a lost node) is restarted and its unfinished calls run again
        # (Labeller.label skips images the dead one finished). These are Ray Data 2.60's defaults for an actor
        # pool, set all the same; it deprecates passing them, yet no named parameter takes them.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            labelled = dataset.map_batches(Labeller, fn_constructor_kwargs=labeller_args, batch_size=1, num_cpus=1,
                                           compute=ray.data.ActorPoolStrategy(size=workers),
                                           max_restarts=-1, max_task_retries=-1)
        for row in labelled.iter_rows():
            done(int(row["index"]), str(row["error"] or ""))
    except ray.exceptions.ActorDiedError as err:
        if not getattr(err, "actor_init_failed", False):
            raise
        reason = str(err).strip().splitlines()[-1]  # the constructor's exception, after its traceback
        raise LabelError(f"the Ray workers cannot open the bundle: {reason}") from None
    finally:
        if started:
            ray.shutdown()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.label", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="folder, glob pattern, .txt manifest or image")
    parser.add_argument("--out", type=Path, required=True, help="the run's folder (new, or an earlier run's to resume)")
    parser.add_argument("--boxes", type=Path, help="JSON of XYXY pixel boxes by file_name: one mask per box")
    parser.add_argument("--ray", action="store_true", help="run on Ray Data (a local cluster unless --ray-address)")
    parser.add_argument("--workers", type=int, default=1, help="Ray actors, one Session each (default 1)")
    parser.add_argument("--ray-address", help="an existing Ray cluster's address")
    parser.add_argument("--shard-size", type=int, default=100, help="images per shard file (default 100)")
    parser.add_argument("--points-per-side", type=int, default=32, help="segment-everything's grid (default 32)")
    parser.add_argument("--pred-iou-thresh", type=float, default=0.88, help="default 0.88")
    parser.add_argument("--stability-score-thresh", type=float, default=0.95, help="default 0.95")
    parser.add_argument("--backend", choices=registry.choices(), default="auto")
    args = parser.parse_args(argv)
    try:
        summary = label_dataset(args.bundle, args.inputs, args.out, args.boxes, args.ray, args.workers,
                                args.shard_size, args.points_per_side, args.pred_iou_thresh,
                                args.stability_score_thresh, args.backend, args.ray_address)
    except (ValueError, RuntimeError) as err:  # LabelError, BundleError, MaskGeneratorError, OutputError
        print(f"error: {err}", file=sys.stderr)
        return 1 if isinstance(err, ImageFailed) else 2
    except KeyboardInterrupt:
        print(f"interrupted: finished images are kept in {args.out}; rerun the same command to resume", file=sys.stderr)
        return 130
    print(f"{summary.labelled} images labelled ({summary.skipped} done before), {summary.annotations} annotations "
          f"-> {summary.out / 'annotations.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
