"""Video parity: a bundle's tracker (runtime.video) against sam2's SAM2VideoPredictor on the same weights.

Both run the same script of calls on the same frames: prompts for several objects (a click, a box, a
mask), a forward pass, a correction click on a tracked frame, a second forward pass, and a reverse
pass from the last frame. Compared, for every frame and object each call answers:
- the mask (IoU of logits > 0) and the mask logits at the video's size (largest absolute difference,
  where neither side is the -1024 "absent" value: that one counts through the object score);
and, from both states after the script, for every frame and object kept in memory:
- the object pointer, the object score logit, and the memory features (bfloat16 on both sides).

Thresholds are float32's: a dropped memory frame, a wrong temporal position or a pointer at the wrong
distance moves logits by far more (tests/test_video_parity.py breaks each and sees it fail).
The clip should be long enough to fill the memory bank (>= 16 frames: 6 memory frames, 15 pointers).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .tracker import from_bfloat16
from .video import VideoPredictor


@dataclass(frozen=True)
class VideoThresholds:
    """float32's. Measured on SAM 2.1 hiera-t (256 px, perturbed seeded weights; tests/test_video_parity.py),
    ONNX Runtime and OpenVINO: logits 3.7e-5, pointers 4.5e-6, object scores 2e-6, memory one bfloat16 step;
    a wrong temporal position moves logits by 8.7e-3 and pointers by 1.5e-3, a pointer one frame off 1e-3 and
    1.4e-4, a dropped memory frame 1.9e-2 and 3.7e-3."""

    min_mask_iou: float = 0.99  # a few boundary pixels of a 256-px mask upscaled
    # |logit difference| / max(1, the reference's largest |logit| on that frame): real models' logits span
    # +-30, so their float32 error does too.
    max_logit_error: float = 5e-4
    max_pointer_error: float = 5e-5
    max_score_error: float = 5e-5  # the object score logit
    # |memory difference| / (|reference| + 1e-3): both sides round to bfloat16, and a float32 difference
    # across a rounding boundary is one bfloat16 step (2^-8 to 2^-7 of the value), near zero more; four steps allowed.
    max_memory_error: float = 2**-5


def default_script(num_frames: int, height: int, width: int) -> list[tuple]:
    """Three objects (two clicks, a box, a mask on the next frame), forward, a correction click on a tracked
    frame, forward again, then reverse from the last frame. Positions are fractions of the frame."""
    mask = np.zeros((height, width), bool)
    mask[int(0.55 * height):int(0.85 * height), int(0.1 * width):int(0.4 * width)] = True
    middle = num_frames // 2
    return [
        # two clicks at once: more than one point, so the decoder's single-mask answer (and token 0's pointer)
        ("points", 0, 1, [[0.5 * width, 0.5 * height], [0.9 * width, 0.1 * height]], [1, 0]),
        ("box", 0, 2, [0.15 * width, 0.1 * height, 0.55 * width, 0.5 * height]),
        ("mask", min(1, num_frames - 1), 3, mask),  # tracked on frame 0 from its future memory alone
        ("propagate", None, None, False),
        ("points", middle, 1, [[0.3 * width, 0.7 * height]], [0]),
        ("propagate", None, None, False),
        ("propagate", num_frames - 1, None, True),
    ]


def short_script(height: int, width: int) -> list[tuple]:
    """What every build checks (runtime.parity's video section): two objects (a click, a box), forward."""
    return [("points", 0, 1, [[0.5 * width, 0.5 * height]], [1]),
            ("box", 0, 2, [0.15 * width, 0.1 * height, 0.55 * width, 0.5 * height]),
            ("propagate", None, None, False)]


def build_check(bundle, checkpoint, backend: str, frames: int = 8) -> dict:
    """The video section of a SAM 2 bundle's parity report: a synthetic clip of `frames` frames (8: the memory
    bank's 7 frames fill), short_script, the report without its per-frame rows (the failed ones kept)."""
    import tempfile

    from .reference import parity_clip

    with tempfile.TemporaryDirectory(prefix="samedge-video-parity-") as folder:
        clip = parity_clip(folder, frames)
        report = run_video_parity(bundle, clip, checkpoint, backend, script=short_script(96, 128))
    report["video"] = f"compress.demo.clips.moving_shapes({frames}, 96, 128)"
    failed = [row for row in report.pop("answers") if row["mask_iou"] < report["thresholds"]["min_mask_iou"]
              or row["logit_error"] > report["thresholds"]["max_logit_error"]]
    report.pop("memory")
    report["failed"] = [f"frame {row['frame']} object {row['object']}" for row in failed][:20]
    return report


def _run(predictor, state, script, to_numpy) -> list[tuple]:
    """Every answer of the script as (call number, frame, obj_ids, logits [objects, 1, H, W])."""
    answers = []
    for number, (kind, *args) in enumerate(script):
        if kind == "points":  # ("points", frame, obj, points, labels[, box]): a box with them, in one call
            frame, obj, points, labels, *box = args
            answer = predictor.add_new_points_or_box(state, frame, obj, points=np.asarray(points, np.float32),
                                                     labels=np.asarray(labels, np.int32),
                                                     box=np.asarray(box[0], np.float32) if box else None)
            answers.append((number, answer[0], list(answer[1]), to_numpy(answer[2])))
        elif kind == "box":
            frame, obj, box = args
            answer = predictor.add_new_points_or_box(state, frame, obj, box=np.asarray(box, np.float32))
            answers.append((number, answer[0], list(answer[1]), to_numpy(answer[2])))
        elif kind == "mask":
            frame, obj, mask = args
            answer = predictor.add_new_mask(state, frame, obj, mask)
            answers.append((number, answer[0], list(answer[1]), to_numpy(answer[2])))
        elif kind == "propagate":
            start, count, reverse = args
            for frame, obj_ids, logits in predictor.propagate_in_video(state, start, count, reverse):
                answers.append((number, frame, list(obj_ids), to_numpy(logits)))
        else:
            raise ValueError(f"unknown script step {kind!r}: points, box, mask or propagate")
    return answers


def _torch_numpy(tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def reference_answers(model, video_dir: Path, script) -> tuple[list, dict]:
    """SAM2VideoPredictor's answers to `script` and its memory: {(obj_id, frame): (pointer, score, memory)}."""
    import torch

    from .reference import video_reference

    predictor = video_reference(model)
    with torch.inference_mode():
        state = predictor.init_state(str(video_dir))
        answers = _run(predictor, state, script, _torch_numpy)
    memory = {}
    for obj_idx, obj_id in state["obj_idx_to_id"].items():
        outputs = state["output_dict_per_obj"][obj_idx]
        for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
            for frame, out in outputs[kind].items():
                memory[(obj_id, frame)] = (_torch_numpy(out["obj_ptr"]), _torch_numpy(out["object_score_logits"]),
                                           _torch_numpy(out["maskmem_features"]))
    return answers, memory


def bundle_answers(predictor: VideoPredictor, video_dir: Path, script) -> tuple[list, dict]:
    state = predictor.init_state(video_dir)
    answers = _run(predictor, state, script, np.asarray)
    memory = {}
    for obj_id, obj in state.objects.items():
        for frame, out in {**obj.cond, **obj.non_cond}.items():
            memory[(obj_id, frame)] = (out.obj_ptr, out.object_score, from_bfloat16(out.memory))
    return answers, memory


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare_answers(answers: list, reference: list, memory: dict, reference_memory: dict,
                    thresholds: VideoThresholds) -> dict:
    """The report: one row per call, frame and object, one per kept memory, the worst of each and a verdict."""
    if [a[:3] for a in answers] != [r[:3] for r in reference]:
        raise AssertionError("the bundle's tracker and SAM2VideoPredictor answered different frames or objects: "
                             f"{[a[:3] for a in answers][:5]} vs {[r[:3] for r in reference][:5]}")
    rows = []
    for (number, frame, obj_ids, logits), (_, _, _, expected) in zip(answers, reference):
        for index, obj_id in enumerate(obj_ids):
            ours, theirs = logits[index, 0], expected[index, 0]
            both = (ours > -1000) & (theirs > -1000)  # the -1024 "absent" logits compare through scores
            present_same = bool(np.array_equal(ours > -1000, theirs > -1000))
            scale = max(1.0, float(np.abs(theirs[both]).max())) if both.any() else 1.0
            error = float(np.abs(ours - theirs)[both].max()) / scale if both.any() else 0.0
            rows.append({"call": number, "frame": int(frame), "object": obj_id,
                         "mask_iou": mask_iou(ours > 0, theirs > 0),
                         "logit_error": error if present_same else float("inf")})
    memory_rows = []
    for key in sorted(set(memory) | set(reference_memory), key=str):
        if key not in memory or key not in reference_memory:
            memory_rows.append({"object": key[0], "frame": int(key[1]), "missing": "bundle" if key not in memory
                                else "reference", "pointer_error": float("inf"), "score_error": float("inf"),
                                "memory_error": float("inf")})
            continue
        (pointer, score, features), (ref_pointer, ref_score, ref_features) = memory[key], reference_memory[key]
        memory_rows.append({"object": key[0], "frame": int(key[1]),
                            "pointer_error": float(np.abs(pointer - ref_pointer).max()),
                            "score_error": float(np.abs(score - ref_score).max()),
                            "memory_error": float((np.abs(features - ref_features)
                                                   / (np.abs(ref_features) + 1e-3)).max())})
    worst = {
        "mask_iou": min((r["mask_iou"] for r in rows), default=1.0),
        "logit_error": max((r["logit_error"] for r in rows), default=0.0),
        "pointer_error": max((r["pointer_error"] for r in memory_rows), default=0.0),
        "score_error": max((r["score_error"] for r in memory_rows), default=0.0),
        "memory_error": max((r["memory_error"] for r in memory_rows), default=0.0),
    }
    passed = (worst["mask_iou"] >= thresholds.min_mask_iou and worst["logit_error"] <= thresholds.max_logit_error
              and worst["pointer_error"] <= thresholds.max_pointer_error
              and worst["score_error"] <= thresholds.max_score_error
              and worst["memory_error"] <= thresholds.max_memory_error)
    return {"passed": bool(passed), "worst": worst, "thresholds": asdict(thresholds), "answers": rows,
            "memory": memory_rows, "frames_answered": len(answers)}


def run_video_parity(bundle, video_dir, checkpoint=None, backend: str = "auto", script=None,
                     thresholds: VideoThresholds = VideoThresholds()) -> dict:
    """Track `video_dir` (a folder of JPEG frames: what SAM2VideoPredictor reads) with the bundle and with
    the checkpoint's SAM2VideoPredictor, and compare (see the module's docstring)."""
    from .bundle import open_bundle
    from .reference import bundle_reference_model

    video_dir = Path(video_dir)
    opened = open_bundle(bundle, verify=False)
    checkpoint = checkpoint or opened.checkpoint
    if checkpoint is None:
        raise ValueError(f"video parity needs the checkpoint {opened.root} was built from; pass --checkpoint")
    with VideoPredictor(bundle, backend=backend) as predictor:
        frames = predictor.init_state(video_dir).frames
        script = script or default_script(len(frames), frames.height, frames.width)
        answers, memory = bundle_answers(predictor, video_dir, script)
        backend_name = predictor.session.backend.name
    reference, reference_memory = reference_answers(bundle_reference_model(opened, checkpoint), video_dir, script)
    report = compare_answers(answers, reference, memory, reference_memory, thresholds)
    report.update(backend=backend_name, video=str(video_dir), frames=len(frames), objects=sorted(
        {row["object"] for row in report["answers"]}, key=str))
    return report


def video_summary(report: dict) -> str:
    worst, limits = report["worst"], report["thresholds"]
    verdict = "PASS" if report["passed"] else "FAIL"
    return "\n".join([
        f"video parity {verdict}: {report['frames']} frames, objects {report['objects']}, "
        f"{report['frames_answered']} answers, {report['backend']} vs SAM2VideoPredictor",
        f"  worst mask IoU {worst['mask_iou']:.5f} (>= {limits['min_mask_iou']})",
        f"  max |logit diff| (relative) {worst['logit_error']:.2e} (<= {limits['max_logit_error']:g})",
        f"  max |pointer diff| {worst['pointer_error']:.2e} (<= {limits['max_pointer_error']:g})",
        f"  max |object score diff| {worst['score_error']:.2e} (<= {limits['max_score_error']:g})",
        f"  max |memory diff| (relative) {worst['memory_error']:.2e} (<= {limits['max_memory_error']:g})",
    ])
