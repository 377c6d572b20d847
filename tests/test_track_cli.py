"""python -m runtime.track: its outputs against VideoPredictor called directly, resume, stops, refusals."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from compress.demo.clips import moving_shapes, write_jpeg_folder
from runtime import track
from runtime.video import VideoPredictor

FRAMES, HEIGHT, WIDTH = 6, 96, 128
# Object 1 a click on the disc, object 2 a box around the rectangle, both on frame 0.
POINT, BOX = [102.0, 48.0], [12.0, 19.0, 40.0, 45.0]
PROMPTS = ["--point", "0,102,48", "--box", "0,12,19,40,45,2"]
BACKEND = ["--backend", "onnxruntime"]  # opens in 0.3 s; auto's OpenVINO compiles for a second


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_jpeg_folder(moving_shapes(FRAMES, HEIGHT, WIDTH), tmp_path_factory.mktemp("clip"))


def _tracked(bundle, clip, prompt, start=None, reverse=False) -> dict[int, np.ndarray]:
    """VideoPredictor called directly: frame -> bool masks [objects, H, W]."""
    with VideoPredictor(bundle, backend="onnxruntime") as predictor:
        state = predictor.init_state(str(clip))
        prompt(predictor, state)
        return {frame: logits[:, 0] > 0 for frame, _, logits in
                predictor.propagate_in_video(state, start_frame_idx=start, reverse=reverse)}


@pytest.fixture(scope="module")
def reference(sam2_bundle, clip) -> dict[int, np.ndarray]:
    def prompt(predictor, state):
        predictor.add_new_points_or_box(state, 0, 1, points=[POINT], labels=[1])
        predictor.add_new_points_or_box(state, 0, 2, box=BOX)

    masks = _tracked(sam2_bundle, clip, prompt)
    assert sorted(masks) == list(range(FRAMES))
    return masks


def _main(capsys, *args) -> tuple[int, str, str]:
    try:
        code = track.main([str(arg) for arg in args])
    except SystemExit as stop:  # argparse's refusals
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _png_masks(out: Path, frame: int, objects=(1, 2)) -> np.ndarray:
    return np.stack([np.asarray(Image.open(out / "masks" / f"{frame:05d}" / f"{obj}.png")) > 127 for obj in objects])


def _files(out: Path) -> list[str]:
    return sorted(str(path.relative_to(out)) for path in out.rglob("*"))


def _no_partial_files(out: Path) -> None:
    assert not [path for path in out.rglob("*") if path.name.startswith(".")], _files(out)


@pytest.fixture(scope="module")
def png_run(sam2_bundle, clip, tmp_path_factory):
    """One uninterrupted run, with an overlay: (out folder, overlay path, stdout, stderr)."""
    folder = tmp_path_factory.mktemp("png-run")
    out, overlay = folder / "out", folder / "tracked.mp4"
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = track.main([str(sam2_bundle), str(clip), "--out", str(out), *PROMPTS, *BACKEND,
                           "--overlay", str(overlay)])
    assert code == 0, stderr.getvalue()
    return out, overlay, stdout.getvalue(), stderr.getvalue()


def test_png_masks_agree_with_the_predictor(png_run, reference):
    out, *_ = png_run
    names = [f"{frame:05d}" for frame in range(FRAMES)]
    assert _files(out) == sorted(["masks", "progress.json", "tracker-state-00005.npz",
                                  *(f"masks/{name}" for name in names),
                                  *(f"masks/{name}/{obj}.png" for name in names for obj in (1, 2))])
    for frame in range(FRAMES):
        picture = Image.open(out / "masks" / f"{frame:05d}" / "1.png")
        assert picture.mode == "L" and picture.size == (WIDTH, HEIGHT)
        assert set(np.unique(np.asarray(picture))) <= {0, 255}
        np.testing.assert_array_equal(_png_masks(out, frame), reference[frame])
    progress = json.loads((out / "progress.json").read_text())
    assert progress["last_finished"] == FRAMES - 1 and progress["state"] == "tracker-state-00005.npz"


def test_overlay_video_has_every_frame(png_run, clip):
    _, overlay, *_ = png_run
    with av.open(str(overlay)) as container:
        pictures = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(pictures) == FRAMES and pictures[0].shape == (HEIGHT, WIDTH, 3)
    first = np.asarray(Image.open(clip / "00000.jpg")).astype(int)
    assert np.abs(pictures[0].astype(int) - first).mean() > 10  # the masks are tinted in


def test_one_summary_line_and_a_progress_bar(png_run):
    out, overlay, stdout, stderr = png_run
    assert stdout == (f"6 frame(s) (0..5), object(s) 1, 2, backend onnxruntime -> {out / 'masks'}/ (one PNG per "
                      f"frame and object), overlay {overlay}\n")
    assert "track: 100%" in stderr and "6/6" in stderr  # tqdm's bar


def _coco(out: Path) -> dict[int, np.ndarray]:
    report = json.loads((out / "masks.json").read_text())
    by_frame = {}
    for record in report["masks"]:
        assert record["frame_name"] == f"{record['frame_index']:05d}"
        segmentation = {**record["segmentation"], "counts": record["segmentation"]["counts"].encode()}
        mask = coco_mask.decode(segmentation).astype(bool)
        assert record["area"] == mask.sum()
        by_frame.setdefault(record["frame_index"], {})[record["object_id"]] = mask
    return {frame: np.stack([masks[1], masks[2]]) for frame, masks in by_frame.items()}


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools' decode on numpy 2
def test_coco_resume_after_max_frames_equals_one_run(sam2_bundle, clip, reference, tmp_path, capsys):
    out = tmp_path / "out"
    args = [sam2_bundle, clip, "--out", out, *PROMPTS, *BACKEND, "--format", "coco"]
    code, stdout, err = _main(capsys, *args, "--max-frames", 3)
    assert code == 0, err
    first = _coco(out)
    assert sorted(first) == [0, 1, 2]
    code, stdout, err = _main(capsys, *args, "--resume")
    assert code == 0, err
    assert "(0..5, 3 this run)" in stdout
    resumed = _coco(out)
    assert sorted(resumed) == list(range(FRAMES))
    for frame in range(FRAMES):
        np.testing.assert_array_equal(resumed[frame], reference[frame])
    assert sorted(path.name for path in (out / "records").iterdir()) == [f"{f:05d}.json" for f in range(FRAMES)]
    _no_partial_files(out)


def test_stops_leave_no_half_written_frame_and_resume_finishes(sam2_bundle, clip, reference, tmp_path, capsys,
                                                               monkeypatch):
    out = tmp_path / "out"
    args = [sam2_bundle, clip, "--out", out, *PROMPTS, *BACKEND]
    write, step = track.write_mask_png, VideoPredictor.track_frame

    def disk_full_on_frame_3(path, mask):
        if path.parent.name.startswith(".00003.") and path.name == "2.png":  # object 1's file is written
            raise OSError(28, "No space left on device")
        write(path, mask)

    def interrupted_at_frame_4(self, state, frame_idx, reverse=False):
        if frame_idx == 4:
            raise KeyboardInterrupt
        return step(self, state, frame_idx, reverse)

    def saved_frames() -> list[str]:
        _no_partial_files(out)
        return sorted(path.name for path in (out / "masks").iterdir())

    monkeypatch.setattr(track, "write_mask_png", disk_full_on_frame_3)
    code, _, err = _main(capsys, *args)
    assert code == 1
    assert "No space left on device" in err and "--resume" in err
    assert saved_frames() == ["00000", "00001", "00002"]
    assert json.loads((out / "progress.json").read_text())["last_finished"] == 2
    assert sorted(path.name for path in out.glob("tracker-state-*")) == ["tracker-state-00002.npz"]

    monkeypatch.setattr(track, "write_mask_png", write)
    monkeypatch.setattr(VideoPredictor, "track_frame", interrupted_at_frame_4)
    code, _, err = _main(capsys, *args, "--resume")
    assert code == 130 and "interrupted" in err and "--resume" in err
    assert saved_frames() == ["00000", "00001", "00002", "00003"]

    monkeypatch.setattr(VideoPredictor, "track_frame", step)
    code, stdout, err = _main(capsys, *args, "--resume")
    assert code == 0, err
    assert "(0..5, 2 this run)" in stdout
    for frame in range(FRAMES):
        np.testing.assert_array_equal(_png_masks(out, frame), reference[frame])
    assert sorted(path.name for path in out.glob("tracker-state-*")) == ["tracker-state-00005.npz"]
    assert saved_frames() == [f"{frame:05d}" for frame in range(FRAMES)]


def test_reverse_from_a_mask_resumes_down_to_frame_0(sam2_bundle, clip, tmp_path, capsys):
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[40:70, 70:110] = True
    mask_file = tmp_path / "mask.png"
    Image.fromarray(np.where(mask, 7, 0).astype(np.uint8)).save(mask_file)  # any nonzero value is inside
    expected = _tracked(sam2_bundle, clip, lambda p, s: p.add_new_mask(s, 2, 1, mask), start=2, reverse=True)
    assert sorted(expected) == [0, 1, 2]

    out = tmp_path / "out"
    args = [sam2_bundle, clip, "--out", out, "--mask", f"2,{mask_file}", "--reverse", *BACKEND]
    code, _, err = _main(capsys, *args, "--max-frames", 2)  # frames 2 and 1; resuming tracks frame 0 alone
    assert code == 0, err
    assert sorted(path.name for path in (out / "masks").iterdir()) == ["00001", "00002"]
    code, stdout, err = _main(capsys, *args, "--resume")
    assert code == 0, err
    assert "3 frame(s) (0..2, 1 this run)" in stdout
    for frame in range(3):
        np.testing.assert_array_equal(_png_masks(out, frame, objects=(1,)), expected[frame])


# ---------------------------------------------------------------- refusals

@pytest.fixture(scope="module")
def bad_mask_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("masks")
    (folder / "garbage.png").write_bytes(b"not an image at all")
    Image.fromarray(np.ones((48, 64), np.uint8)).save(folder / "small.png")
    return {"garbage": folder / "garbage.png", "small": folder / "small.png", "missing": folder / "nowhere.png"}


@pytest.mark.parametrize("prompt, message", [
    (["--point", "9,10,10"], "--point 9,10,10: frame 9 is outside the video (frames 0..5)"),
    (["--box", "6,1,1,20,20"], "--box 6,1,1,20,20: frame 6 is outside the video"),
    (["--point", "0,500,10"], "lies outside the 128x96 image"),
    (["--box", "0,30,30,10,10"], "is empty or reversed"),
    ([], "no prompt: give at least one --point"),
    (["--mask", "0,{garbage}"], "cannot read"),
    (["--mask", "0,{missing}"], "cannot read"),
    (["--mask", "0,{small}"], "the mask is 64x48 but the video's frames are 128x96; resize it"),
    (["--point", "0,10,10", "--mask", "0,{small}"], "a mask is the whole answer"),
])
def test_bad_prompts_are_refused(sam2_bundle, clip, bad_mask_files, tmp_path, capsys, prompt, message):
    prompt = [part.format(**bad_mask_files) for part in prompt]
    code, stdout, err = _main(capsys, sam2_bundle, clip, "--out", tmp_path / "out", *prompt)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, message", [
    (["--point", "0,abc,3"], "argument --point: 0,abc,3: X 'abc' is not a number"),
    (["--point", "0,10"], "argument --point: 0,10: give FRAME,X,Y[,OBJ[,LABEL]] (3 to 5 values), got 2"),
    (["--point=-1,10,10"], "FRAME -1 is below 0"),  # argparse takes a bare -1,... for an option
    (["--point", "0,10,10,1,2"], "LABEL 2 is neither 1 (foreground) nor 0 (background)"),
    (["--point", "1.5,10,10"], "FRAME '1.5' is not a whole number"),
    (["--box", "0,1,2,3"], "argument --box: 0,1,2,3: give FRAME,X0,Y0,X1,Y1[,OBJ] (5 or 6 values), got 4"),
    (["--box", "0,1,2,3,nan"], "Y1 'nan' is not a finite number"),
    (["--mask", "0"], "argument --mask: 0: give FRAME,PATH[,OBJ]"),
])
def test_malformed_prompt_text_is_refused(capsys, tmp_path, option, message):
    code, _, err = _main(capsys, "bundle", "video", "--out", tmp_path / "out", *option)
    assert code == 2
    assert "error: argument" in err and message in err


def test_a_bundle_that_cannot_track_is_refused(tiny_bundle, clip, tmp_path, capsys):
    code, _, err = _main(capsys, tiny_bundle, clip, "--out", tmp_path / "out", "--point", "0,10,10")
    assert code == 2
    assert f"error: {tiny_bundle} cannot track: it is not a SAM 2 bundle" in err and "export.build" in err


def test_an_empty_video_is_refused(sam2_bundle, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = _main(capsys, sam2_bundle, tmp_path / "empty", "--out", tmp_path / "out", "--point", "0,10,10")
    assert code == 2 and "error: folder" in err and "holds no frames" in err


@pytest.mark.parametrize("options, message", [
    (["--reverse", "--start", "0"], "--reverse from frame 0"),
    (["--start", "6"], "--start 6 is outside the video"),
    (["--max-frames", "0"], "--max-frames 0: track at least 1 frame"),
    (["--overlay", "tracked.gif"], "end its name with one of .mp4"),
    (["--fps", "0"], "--fps 0 is not a positive number"),
])
def test_bad_options_are_refused(sam2_bundle, clip, tmp_path, capsys, options, message):
    code, _, err = _main(capsys, sam2_bundle, clip, "--out", tmp_path / "out", "--point", "0,10,10", *options)
    assert code == 2 and err.startswith("error: ") and message in err


def test_out_folders_that_do_not_fit_are_refused(sam2_bundle, clip, png_run, tmp_path, capsys):
    out, *_ = png_run
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    run = [sam2_bundle, clip, "--out", out, *PROMPTS, *BACKEND]

    code, _, err = _main(capsys, *run)
    assert code == 2 and "holds a previous run" in err and "add --resume" in err and "another --out" in err
    code, _, err = _main(capsys, *run[:4], "--point", "0,50,50", *BACKEND, "--resume")
    assert code == 2 and "was tracked with other prompts" in err and "choose a new --out" in err
    code, _, err = _main(capsys, *run, "--resume", "--format", "coco")
    assert code == 2 and "other options (--format png then, coco now)" in err
    code, _, err = _main(capsys, *run, "--resume", "--start", "1")
    assert code == 2 and "--start 0 then, 1 now" in err
    other_clip = write_jpeg_folder(moving_shapes(FRAMES, HEIGHT, WIDTH, seed=1), tmp_path / "other-clip")
    code, _, err = _main(capsys, sam2_bundle, other_clip, *run[2:], "--resume")
    assert code == 2 and "was tracked on another video" in err
    assert before == {path: path.stat().st_mtime_ns for path in out.rglob("*")}  # nothing written

    code, _, err = _main(capsys, *run, "--resume")  # the same arguments: every frame is done already
    assert code == 0, err

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    code, _, err = _main(capsys, sam2_bundle, clip, "--out", foreign, *PROMPTS)
    assert code == 2 and "is not empty; choose a new or empty folder" in err
    code, _, err = _main(capsys, sam2_bundle, clip, "--out", tmp_path / "new", *PROMPTS, "--resume")
    assert code == 2 and "holds no run to resume" in err and "drop --resume" in err
