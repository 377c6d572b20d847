"""runtime.label: a folder labelled in-process, on Ray Data, through a killed worker and a resumed run.

All runs label the same 8 small shape pictures with 8 x 8 points (thresholds that keep masks on the
demo model), and every way must give the single-process run's annotations.json byte for byte.
One local Ray cluster serves the Ray tests (starting one takes seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

from runtime import Session, load_image
from runtime.everything import MaskGenerator
from runtime.label import ImageFailed, LabelError, label_dataset, main
from tests.conftest import REPO

SETTINGS = dict(points_per_side=8, pred_iou_thresh=0.6, stability_score_thresh=0.8)
NAMES = [f"img{i}.png" for i in range(7)] + ["more/img7.png"]  # a subfolder's image comes last, sorted by path
SHARD_SIZE = 3  # 8 images: shards of 3, 3 and 2


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    size = (128, 96) if seed % 2 else (96, 128)

    def colour():
        return tuple(int(v) for v in rng.integers(0, 256, 3))

    picture = Image.new("RGB", size, colour())
    draw = ImageDraw.Draw(picture)
    for _ in range(3):
        x, y = (int(v) for v in rng.integers(0, 60, 2))
        box = [x, y, x + int(rng.integers(20, 40)), y + int(rng.integers(20, 40))]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour())
    return picture


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    for seed, name in enumerate(NAMES):
        (folder / name).parent.mkdir(exist_ok=True)
        _picture(seed).save(folder / name)
    return folder


def _label(bundle, inputs, out, **options):
    return label_dataset(bundle, inputs, out, shard_size=SHARD_SIZE, show_progress=False, **{**SETTINGS, **options})


@pytest.fixture(scope="module")
def single(demo_bundle, images, tmp_path_factory) -> Path:
    """The single-process run's folder: what every other way must give."""
    out = tmp_path_factory.mktemp("single") / "labels"
    summary = _label(demo_bundle, [images], out)
    assert (summary.images, summary.labelled, summary.skipped, summary.shards) == (8, 8, 0, 3)
    return out


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_single_process_gives_the_mask_generators_records(single, demo_bundle, images):
    coco = json.loads((single / "annotations.json").read_text())
    assert [(image["id"], image["file_name"]) for image in coco["images"]] == list(enumerate(NAMES, 1))
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    assert coco["categories"] == [{"id": 1, "name": "object"}]
    assert len(coco["annotations"]) >= 2 * len(NAMES)  # enough masks for the comparison to mean something
    with Session(demo_bundle) as session:
        generator = MaskGenerator(session, **SETTINGS, output_mode="coco_rle", show_progress=False)
        for image in coco["images"]:
            records = generator.generate(load_image(images / image["file_name"]))
            ours = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
            assert [a["segmentation"] for a in ours] == [r["segmentation"] for r in records]
            assert [a["score"] for a in ours] == [r["predicted_iou"] for r in records]
            for key in ("area", "bbox", "stability_score", "point_coords", "crop_box"):
                assert [a[key] for a in ours] == [r[key] for r in records]
    shards = [json.loads(path.read_text()) for path in sorted((single / "shards").glob("shard-*.json"))]
    assert [len(shard["images"]) for shard in shards] == [3, 3, 2]
    assert sum(len(shard["annotations"]) for shard in shards) == len(coco["annotations"])
    assert not list((single / "parts").iterdir())  # assembled into their shards


def test_ray_gives_the_same_annotations(ray_cluster, demo_bundle, images, single, tmp_path):
    summary = _label(demo_bundle, [images], tmp_path / "labels", use_ray=True, workers=2)
    assert (summary.labelled, summary.skipped) == (8, 0)
    assert (tmp_path / "labels" / "annotations.json").read_bytes() == (single / "annotations.json").read_bytes()


def _descendants(root: int) -> list[int]:
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _map_workers() -> list[int]:
    """This test's Ray actors labelling images (the cluster's processes descend from this one), busy ones first."""
    titles = {}
    for pid in _descendants(os.getpid()):
        try:
            titles[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
    workers = [pid for pid, title in titles.items() if title.startswith("ray::MapWorker(MapBatches(Labeller))")]
    return sorted(workers, key=lambda pid: not titles[pid].endswith(".submit"))


def test_a_killed_worker_loses_nothing(ray_cluster, demo_bundle, images, single, tmp_path):
    """SIGKILL to a labelling actor once an image is done: Ray restarts it and runs its lost call again;
    each image is labelled once and the result is the single-process run's."""
    out = tmp_path / "labels"
    killed, stop = [], threading.Event()

    def kill_one_worker():
        while not stop.is_set():
            done = len(list((out / "parts").glob("*.json"))) + 3 * len(list((out / "shards").glob("*.json")))
            workers = _map_workers() if done else []
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed.append((workers[0], done))
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_one_worker)
    watcher.start()
    try:
        summary = _label(demo_bundle, [images], out, use_ray=True, workers=2)
    finally:
        stop.set()
        watcher.join()
    assert killed and killed[0][1] < len(NAMES), f"no worker killed while images were left: {killed}"
    assert (summary.labelled, summary.skipped) == (8, 0)
    assert (out / "annotations.json").read_bytes() == (single / "annotations.json").read_bytes()


def test_resume_does_only_what_is_missing(demo_bundle, images, single, tmp_path):
    # A run that stops at an unreadable image keeps what it finished and names the file.
    folder = tmp_path / "images"
    shutil.copytree(images, folder)
    (folder / "img4.png").write_bytes(b"not a picture")
    out = tmp_path / "labels"
    with pytest.raises(ImageFailed, match=r"img4\.png is not a readable image.*rerun the same command"):
        _label(demo_bundle, [folder], out)
    first_shard = out / "shards" / "shard-00000.json"
    assert first_shard.is_file() and (out / "parts" / "00000003.json").is_file()
    written = first_shard.stat().st_mtime_ns
    shutil.copy(images / "img4.png", folder / "img4.png")
    summary = _label(demo_bundle, [folder], out)
    assert (summary.labelled, summary.skipped) == (4, 4)  # images 5 to 8; 1 to 3 in shard 0, 4 in its part
    assert first_shard.stat().st_mtime_ns == written
    assert (out / "annotations.json").read_bytes() == (single / "annotations.json").read_bytes()

    # A lost shard: its images alone are labelled again.
    (out / "shards" / "shard-00001.json").unlink()
    summary = _label(demo_bundle, [folder], out)
    assert (summary.labelled, summary.skipped) == (3, 5)
    assert (out / "annotations.json").read_bytes() == (single / "annotations.json").read_bytes()

    # Other settings or inputs into the same folder are refused.
    with pytest.raises(LabelError, match=r"other settings \(\{.points_per_side.: 8, .*4, .* here\); rerun with the "
                                         r"same inputs and settings to resume it, or choose a new --out"):
        _label(demo_bundle, [folder], out, points_per_side=4)
    with pytest.raises(LabelError, match=r"other images \(8 there, 1 here\), inputs; .*new --out"):
        _label(demo_bundle, [folder / "img1.png"], out)


def test_boxes_give_predict_batchs_masks(demo_bundle, images, tmp_path):
    boxes = {"img0.png": [[10, 10, 60, 50], [0, 0, 96, 128]], "more/img7.png": [[5.5, 5, 40, 40]]}
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    summary = _label(demo_bundle, [images], tmp_path / "labels", boxes=tmp_path / "boxes.json")
    assert summary.annotations == 3
    coco = json.loads((tmp_path / "labels" / "annotations.json").read_text())
    with Session(demo_bundle) as session:
        for name, given in boxes.items():
            image_id = NAMES.index(name) + 1
            ours = [a for a in coco["annotations"] if a["image_id"] == image_id]
            answer = session.predict_batch(load_image(images / name), boxes=given, multimask_output=False)
            assert [a["prompt_box"] for a in ours] == given
            assert [a["score"] for a in ours] == answer.scores[:, 0].tolist()
            for annotation, mask in zip(ours, answer.masks[:, 0]):
                np.testing.assert_array_equal(coco_mask.decode(annotation["segmentation"]).astype(bool), mask)
                assert annotation["area"] == mask.sum()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case, message", [
    ("empty folder", r"no images found in .*empty"),
    ("same folder twice", r"two input images have the file_name 'img0.png'"),
    ("manifest of a missing file", r"lists gone\.png, which is not a file"),
    ("boxes for another image", r"boxes for 'other.png', which is not among the 8 input images"),
    ("reversed box", r"box 0 of 'img1.png': box \[30.0, 10.0, 20.0, 40.0\] is empty or reversed"),
    ("box outside", r"box 1 of 'img1.png': .*reaches outside the 128x96 image"),
    ("boxes not JSON", r"cannot be read as JSON .*expected \{"),
    ("folder of something else", r"not empty and holds no run.json"),
    ("workers without ray", r"--workers 2 needs --ray"),
])
def test_bad_inputs_are_refused_before_any_work(demo_bundle, images, tmp_path, case, message):
    inputs, out, options = [images], tmp_path / "labels", {}
    if case == "empty folder":
        inputs = [tmp_path / "empty"]
        inputs[0].mkdir()
    elif case == "same folder twice":
        inputs = [images, images]
    elif case == "manifest of a missing file":
        inputs = [_write(tmp_path / "list.txt", "img0.png\ngone.png\n")]
        shutil.copy(images / "img0.png", tmp_path)
    elif case == "folder of something else":
        out.mkdir()
        _write(out / "notes.txt", "mine")
    elif case == "workers without ray":
        options = dict(workers=2)
    else:
        boxes = {"boxes for another image": '{"other.png": [[0, 0, 5, 5]]}',
                 "reversed box": '{"img1.png": [[30, 10, 20, 40]]}',
                 "box outside": '{"img1.png": [[0, 0, 5, 5], [0, 0, 129, 50]]}',
                 "boxes not JSON": "img1.png: 0 0 5 5"}[case]
        options = dict(boxes=_write(tmp_path / "boxes.json", boxes))
    with pytest.raises(LabelError, match=message):
        _label(demo_bundle, inputs, out, **options)
    assert not (out / "parts").exists()


def test_command_line(demo_bundle, images, tmp_path, capsys):
    manifest = _write(tmp_path / "list.txt", f"# two of them\n{images / 'img1.png'}\n{images / 'more/img7.png'}\n")
    # A run that fails before its first image (no TensorRT engines) leaves the folder to a run with other settings.
    assert main([str(demo_bundle), str(manifest), "--out", str(tmp_path / "labels"), "--backend", "tensorrt"]) == 2
    assert "error: " in capsys.readouterr().err
    result = subprocess.run([sys.executable, "-m", "runtime.label", str(demo_bundle), str(manifest), "--out",
                             str(tmp_path / "labels"), "--points-per-side", "4", "--pred-iou-thresh", "0.6",
                             "--stability-score-thresh", "0.8"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 images labelled (0 done before)" in result.stdout
    coco = json.loads((tmp_path / "labels" / "annotations.json").read_text())
    assert [image["file_name"] for image in coco["images"]] == [str(images / "img1.png"), str(images / "more/img7.png")]

    assert main([str(demo_bundle), str(tmp_path / "nowhere"), "--out", str(tmp_path / "other")]) == 2
    assert "error: INPUT" in capsys.readouterr().err
    _write(tmp_path / "broken.png", "not a picture")
    assert main([str(demo_bundle), str(tmp_path / "broken.png"), "--out", str(tmp_path / "broken")]) == 1
    assert "broken.png is not a readable image" in capsys.readouterr().err
