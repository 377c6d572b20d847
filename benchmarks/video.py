"""SAM 2.1 video tracking on the CPU: sam2's SAM2VideoPredictor (torch) against runtime.video.VideoPredictor
on ONNX Runtime and on OpenVINO, per frame and per object count, and each one's peak memory.

    python -m benchmarks.run video [--model sam2.1_hiera_t] [--objects 1 4 16] [--frames 9 9 3]
                                   [--engines torch onnxruntime openvino] [--fresh]
    python -m benchmarks.run video --model sam2.1_hiera_t_256 --objects 1 2 --frames 4    # a smoke run
    python -m benchmarks.run video --from-json docs/benchmarks/video.json   # the text again, nothing measured

The model: SAM 2.1 hiera-t with seeded weights (compress.seeded_checkpoint), its dense bundle built with
the project's own entry points and cached in .cache/benchmarks/<model type>/ as the sam2 page's is
(benchmarks/variants.py; rebuilt when export's GRAPH_REVISION changes, or with --fresh). The clip: compress.demo.clips'
moving_shapes (seed 0), 480 x 640 frames written as JPEG files, the folder SAM2VideoPredictor reads; every
engine opens that folder itself (init_state). Prompts: one foreground click per object on frame 0, the
clicks at the centres of a near-square grid over the frame; each engine gets its own init_state and the same
clicks. Timing: the three engines open at once in one process, one propagate_in_video generator each, advanced
one frame at a time in turn (the order rotated from frame to frame, so machine noise hits them alike), each
next() timed: frame 0 is the prompted frame (its answer is the prompt's; the time is the memory encoding of
the prompts), frames 1..6 read a filling memory bank, and from frame 7 on every frame reads a full one (the
prompted frame and the 6 frames before it, num_maskmem 7). Each engine first tracks two frames of the same clip,
untimed (OpenVINO compiles, ONNX Runtime opens the memory pieces, torch allocates). torch on the CPU with as many
threads as there are cores (ONNX Runtime and OpenVINO use them all by default). The profile wraps the
VideoPredictor's piece runs (its TrackerModel.run and the backend's encode) with timers, for both samedge
backends, changing nothing they compute; "other" is the rest of the frame (numpy around the pieces: the
bfloat16 memory, the upscaling of the masks, reading the JPEG). Peak RSS: a fresh process per engine and object
count tracking the first frames of the same clip (this module's child), the whole process's high-water mark
(VmHWM); "imports": the same process without the model. OpenVINO reads its compiled models from a cache that
the timing run filled (a user's second run). Masks vs torch: the lowest IoU of masks (logits > 0) against
torch's on the same frame and object, over every frame and object timed. Writes docs/benchmarks/video.md.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from .report import CACHE, DOCS, Page, fmt, proc_field, table

PAGE = DOCS / "video.md"
MODEL = "sam2.1_hiera_t"
ENGINES = {"torch": "torch CPU (SAM2VideoPredictor)", "onnxruntime": "VideoPredictor, ONNX Runtime",
           "openvino": "VideoPredictor, OpenVINO"}
SAMEDGE = ("onnxruntime", "openvino")
OBJECTS = (1, 4, 16)
FRAMES, FEW_FRAMES = 9, 3  # frames per clip: up to ORT_UP_TO objects, and above (16 objects: the memory not full)
ORT_UP_TO = 4  # ONNX Runtime is timed up to this many objects by default (its time: about twice OpenVINO's)
PEAK_OBJECTS, PEAK_FRAMES = (1, 4), 8
FULL_FROM = 7  # num_maskmem: from this frame on, the memory bank is full (the prompted frame + 6 tracked)
WARMUP_FRAMES = 2
CLIP_HW, CLIP_SEED = (480, 640), 0
PIECES = ("encoder", "memory_attention", "decoder_batch", "memory_encoder")
AIM = 0.6  # the issue's aim: the faster backend at <= 0.6x torch's time per frame
GIB = 2 ** 30


def add_arguments(parser) -> None:
    from compress.families.sam2 import MODEL_TYPES

    parser.add_argument("--model", default=MODEL, choices=sorted(MODEL_TYPES),
                        help="SAM 2 model type, seeded weights (sam2.1_hiera_t_256: a smoke run)")
    parser.add_argument("--objects", nargs="+", type=int, default=list(OBJECTS), help="object counts to track")
    parser.add_argument("--frames", nargs="+", type=int, metavar="N",
                        help=f"frames tracked (the prompted one included): one per --objects value, or one for all "
                             f"(default: {FRAMES} up to {ORT_UP_TO} objects, memory full from frame {FULL_FROM}; "
                             f"{FEW_FRAMES} above)")
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES),
                        help="engines to time (ratios are to torch's: keep it)")
    parser.add_argument("--ort-up-to", type=int, default=ORT_UP_TO,
                        help="time ONNX Runtime only up to this many objects (its time per frame is the longest)")
    parser.add_argument("--peak-objects", nargs="*", type=int, default=list(PEAK_OBJECTS),
                        help="object counts whose peak RSS is measured (a fresh process per engine and count)")
    parser.add_argument("--peak-frames", type=int, default=PEAK_FRAMES, help="frames each peak-RSS process tracks")
    parser.add_argument("--fresh", action="store_true",
                        help="rebuild the bundle (and seeded checkpoint) instead of reusing the cache")
    parser.add_argument("--from-json", type=Path, metavar="JSON",
                        help="render the page again from the measurements a run saved (its .json), measuring nothing")
    parser.add_argument("--work", type=Path, default=CACHE, help=argparse.SUPPRESS)  # the bundle cache (tests)
    parser.add_argument("--page", type=Path, default=PAGE, help=argparse.SUPPRESS)  # where the page goes (tests)


# ---- the bundle and the clip -----------------------------------------------------------------------

def dense_bundle(model_type: str, work: Path, fresh: bool = False):
    """benchmarks.variants' Built of the model's "original" bundle (the sam2 page's cache), checked to hold
    tracking.safetensors (rebuilt where it does not)."""
    from compress.families.sam2 import TRACKING_TENSORS

    from .sam2 import ORIGINAL, _source
    from .variants import build_variant, cache_dir

    source = _source(model_type, work)
    directory = cache_dir(work, source, ORIGINAL)
    if fresh:
        shutil.rmtree(work / model_type, ignore_errors=True)
    built = build_variant(ORIGINAL, source, work, {})
    if not (built.bundle / TRACKING_TENSORS).is_file():  # built before bundles carried it: rebuild
        print(f"{built.bundle} has no {TRACKING_TENSORS}: rebuilding it", file=sys.stderr)
        shutil.rmtree(directory, ignore_errors=True)
        directory.with_name(directory.name + ".json").unlink(missing_ok=True)
        built = build_variant(ORIGINAL, source, work, {})
    if not (built.bundle / TRACKING_TENSORS).is_file():
        raise RuntimeError(f"{built.bundle} was rebuilt without {TRACKING_TENSORS}: this export cannot track")
    return built


def write_clips(folder: Path, lengths) -> dict[int, Path]:
    """{frames: folder of the first `frames` frames of one moving_shapes clip, as JPEG files}."""
    from compress.demo.clips import moving_shapes, write_jpeg_folder

    frames = moving_shapes(max(lengths), *CLIP_HW, seed=CLIP_SEED)
    clips = {}
    for length in sorted(set(lengths)):
        clip = folder / f"clip-{length}"
        shutil.rmtree(clip, ignore_errors=True)
        clips[length] = write_jpeg_folder(frames[:length], clip)
    return clips


def grid_clicks(objects: int, height: int, width: int) -> list[list[float]]:
    """One click per object at the centres of a near-square grid over the frame, row by row."""
    columns = math.ceil(math.sqrt(objects))
    rows = math.ceil(objects / columns)
    return [[(index % columns + 0.5) * width / columns, (index // columns + 0.5) * height / rows]
            for index in range(objects)]


# ---- the engines -------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_upstream():
    """sam2's propagate_in_video draws a progress bar of its own per call: hidden (display only)."""
    import sam2.sam2_video_predictor as upstream

    bar = upstream.tqdm
    upstream.tqdm = lambda iterable, **_: iterable
    try:
        yield
    finally:
        upstream.tqdm = bar


def _threads() -> int:
    return os.cpu_count() or 1


def open_engine(engine: str, checkpoint: Path, bundle: Path):
    """The engine as a user opens it: torch's SAM2VideoPredictor on the checkpoint, or a VideoPredictor."""
    if engine == "torch":
        import torch

        from compress import load_checkpoint
        from compress.families import get_family

        torch.set_num_threads(_threads())
        model = load_checkpoint(checkpoint)
        predictor = get_family("sam2").video_reference(model)
        del model
        gc.collect()
        return predictor
    from runtime.video import VideoPredictor

    options = {"providers": ["CPUExecutionProvider"]} if engine == "onnxruntime" else {}
    return VideoPredictor(bundle, backend=engine, **options)


def start(predictor, clip: Path, clicks) -> tuple[object, float, float]:
    """(the predictor's state on `clip` with one click per object on frame 0, init_state's seconds, the clicks')."""
    import numpy as np

    began = time.perf_counter()
    state = predictor.init_state(str(clip))
    init = time.perf_counter() - began
    gc.collect()
    began = time.perf_counter()
    for obj_id, click in enumerate(clicks, start=1):
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, points=np.asarray([click], np.float32),
                                        labels=np.asarray([1], np.int32))
    return state, init, time.perf_counter() - began


def _numpy(logits):
    import numpy as np

    if hasattr(logits, "detach"):
        return logits.detach().float().cpu().numpy()
    return np.asarray(logits)


class PieceTimer:
    """Seconds of each piece a VideoPredictor runs, per frame: its TrackerModel.run and its backend's encode,
    wrapped (what they compute is unchanged)."""

    def __init__(self, predictor):
        self.current: dict[str, float] = {}
        model, backend = predictor.model, predictor.session.backend
        run, encode = model.run, backend.encode

        def timed_run(file, feeds):
            began = time.perf_counter()
            try:
                return run(file, feeds)
            finally:
                self._add(Path(file).stem, time.perf_counter() - began)

        def timed_encode(pixels):
            began = time.perf_counter()
            try:
                return encode(pixels)
            finally:
                self._add("encoder", time.perf_counter() - began)

        model.run, backend.encode = timed_run, timed_encode

    def _add(self, piece: str, seconds: float) -> None:
        self.current[piece] = self.current.get(piece, 0.0) + seconds

    def take(self) -> dict[str, float]:
        taken, self.current = self.current, {}
        return taken


def _iou(a, b) -> float:
    import numpy as np

    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def track_interleaved(predictors: dict, timers: dict, clip: Path, clicks, frames: int, bar=None) -> dict:
    """{engine: {'init_s', 'prompts_s', 'frames': [{'frame', 'seconds', 'pieces'?}], 'min_iou_vs_torch'}}: every
    engine's generator advanced one frame in turn, the order rotated per frame."""
    results, generators = {}, {}
    for engine, predictor in predictors.items():  # init_state and the prompts, each engine in turn (not the aim)
        state, init, prompts = start(predictor, clip, clicks)
        if engine in timers:
            timers[engine].take()  # the prompts' pieces are not a frame's
        generators[engine] = predictor.propagate_in_video(state)
        results[engine] = {"init_s": init, "prompts_s": prompts, "frames": [], "min_iou_vs_torch": None}
    names = list(predictors)
    for step in range(frames):
        shift = step % len(names)
        answers = {}
        for engine in names[shift:] + names[:shift]:
            gc.collect()  # a collection owed by earlier work would otherwise land inside the timed call
            began = time.perf_counter()
            frame_idx, _, logits = next(generators[engine])
            seconds = time.perf_counter() - began
            row = {"frame": int(frame_idx), "seconds": seconds}
            if engine in timers:
                row["pieces"] = timers[engine].take()
            results[engine]["frames"].append(row)
            answers[engine] = (int(frame_idx), _numpy(logits) > 0)
            if bar is not None:
                bar.update(1)
        if "torch" in answers:
            reference_frame, reference = answers["torch"]
            for engine, (frame_idx, masks) in answers.items():
                if engine == "torch":
                    continue
                if frame_idx != reference_frame or masks.shape != reference.shape:
                    raise RuntimeError(f"{engine} answered frame {frame_idx} {masks.shape}, torch frame "
                                       f"{reference_frame} {reference.shape}")
                lowest = min(_iou(masks[index, 0], reference[index, 0]) for index in range(len(masks)))
                before = results[engine]["min_iou_vs_torch"]
                results[engine]["min_iou_vs_torch"] = lowest if before is None else min(before, lowest)
    for generator in generators.values():
        generator.close()
    return results


def summarise(frames: list[dict]) -> dict:
    """frame 0's seconds, the mean of frames 1..6 (memory filling), the median from frame 7 (memory full; None
    when the run stopped before), and the mean per piece over the frames the profile is taken on."""
    seconds = {row["frame"]: row["seconds"] for row in frames}
    filling = [s for frame, s in seconds.items() if 1 <= frame < FULL_FROM]
    full = [s for frame, s in seconds.items() if frame >= FULL_FROM]
    summary = {"frame0_s": seconds.get(0), "filling_mean_s": statistics.mean(filling) if filling else None,
               "filling_frames": len(filling), "full_median_s": statistics.median(full) if full else None,
               "full_frames": len(full)}
    profiled = [row for row in frames if "pieces" in row and row["frame"] >= (FULL_FROM if full else 1)]
    if profiled:
        pieces = {piece: statistics.mean(row["pieces"].get(piece, 0.0) for row in profiled) for piece in PIECES}
        total = statistics.mean(row["seconds"] for row in profiled)
        summary["profile"] = {"memory": "full" if full else "filling", "frames": [row["frame"] for row in profiled],
                              "frame_s": total, "pieces_s": pieces, "other_s": total - sum(pieces.values())}
    return summary


def engines_for(objects: int, engines, ort_up_to: int) -> list[str]:
    return [engine for engine in engines if engine != "onnxruntime" or objects <= ort_up_to]


def frames_for(objects_list, frames, ort_up_to: int) -> dict[int, int]:
    if frames is None:
        return {objects: FRAMES if objects <= ort_up_to else FEW_FRAMES for objects in objects_list}
    if len(frames) == 1:
        frames = frames * len(objects_list)
    if len(frames) != len(objects_list):
        raise ValueError(f"--frames: one value, or one per --objects value ({len(objects_list)}), got {len(frames)}")
    return dict(zip(objects_list, frames))


# ---- peak memory (a fresh process per figure) --------------------------------------------------------

def peak_child(engine: str, clip: Path, objects: int, checkpoint: Path | None, bundle: Path | None) -> dict:
    """In this process: the engine's imports, then (unless both model paths are None) the engine opened, the
    clip tracked with `objects` clicks. Returns {'peak_rss_bytes', 'seconds'}."""
    import importlib

    from runtime.video_frames import frame_paths

    began = time.perf_counter()
    # What opening the engine imports, in the floor too (video_reference imports sam2's video predictor).
    for module in (("sam2.sam2_video_predictor", "compress", "compress.families") if engine == "torch" else
                   ("runtime.video",)):
        importlib.import_module(module)
    if engine != "torch":
        from runtime.backends import registry

        registry.backend_class(engine)  # imports the backend's library: part of the floor, not of the model
    if checkpoint is not None or bundle is not None:
        predictor = open_engine(engine, checkpoint, bundle)
        with (_quiet_upstream() if engine == "torch" else contextlib.nullcontext()):
            state, _, _ = start(predictor, clip, grid_clicks(objects, *CLIP_HW))
            tracked = sum(1 for _ in predictor.propagate_in_video(state))
        if tracked != len(frame_paths(clip)):
            raise RuntimeError(f"{engine} tracked {tracked} frames of {clip}")
    return {"peak_rss_bytes": _peak_bytes(), "seconds": time.perf_counter() - began}


def _peak_bytes() -> int:
    peak = proc_field("/proc/self/status", "VmHWM")  # as benchmarks.peak_memory.peak_bytes
    if peak is not None:
        return int(peak.split()[0]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _in_child(engine: str, clip: Path, objects: int, model: tuple[Path, Path] | None, env: dict | None) -> dict:
    from . import peak_memory

    arguments = ["--child", engine, "--clip", str(clip), "--objects", str(objects)]
    arguments += ["--floor"] if model is None else ["--checkpoint", str(model[0]), "--bundle", str(model[1])]
    return peak_memory.in_fresh_process("benchmarks.video", arguments, env)


# ---- the page -------------------------------------------------------------------------------------------

def measure(args) -> Page:
    if args.from_json:
        from .sam2 import _measured_line

        return _page(json.loads(args.from_json.read_text()), args.page, measured=_measured_line(args.page))
    if min(args.objects) < 1 or min(args.frames or [2]) < 2 or args.peak_frames < 2:
        raise ValueError("--objects must be at least 1, --frames and --peak-frames at least 2 (the prompted frame "
                         "and one tracked)")
    began = time.perf_counter()
    from tqdm import tqdm

    from runtime.backends.openvino_backend import CACHE_VARIABLE

    from .sam2 import _environment, _version

    frames = frames_for(args.objects, args.frames, args.ort_up_to)
    engines = {objects: engines_for(objects, args.engines, args.ort_up_to) for objects in args.objects}
    peak_runs = [(engine, objects) for objects in args.peak_objects
                 for engine in engines_for(objects, args.engines, args.ort_up_to)]
    built = dense_bundle(args.model, args.work, args.fresh)
    manifest = built.manifest
    clips = write_clips(args.work / "video-clips", [WARMUP_FRAMES, args.peak_frames, *frames.values()])
    ov_cache = args.work / "video-openvino-cache"
    results = {"settings": {"model": args.model, "img_size": manifest["preprocessing"]["img_size"],
                            "parameters": manifest["model"]["parameters"], "clip_hw": list(CLIP_HW),
                            "clip_seed": CLIP_SEED, "objects": args.objects, "frames": {str(k): v for k, v in
                                                                                        frames.items()},
                            "engines": {str(k): v for k, v in engines.items()}, "ort_up_to": args.ort_up_to,
                            "full_from": FULL_FROM, "peak_frames": args.peak_frames, "sam2": _version("sam2"),
                            "threads": _threads(), "aim": AIM},
               "runs": {}, "peaks": {}, "floors": {}}
    total = sum(frames[o] * len(engines[o]) for o in args.objects) + len(peak_runs) + len(set(args.engines))
    with tqdm(total=total, desc="video", unit="step") as bar:
        with _environment(CACHE_VARIABLE, str(ov_cache)), _quiet_upstream():
            predictors = {engine: open_engine(engine, built.checkpoint, built.bundle) for engine in args.engines}
            timers = {engine: PieceTimer(predictor) for engine, predictor in predictors.items() if engine in SAMEDGE}
            bar.set_description("video: warm-up")
            track_interleaved(predictors, timers, clips[WARMUP_FRAMES], grid_clicks(1, *CLIP_HW), WARMUP_FRAMES)
            for objects in args.objects:
                bar.set_description(f"video: {objects} object{'s' * (objects > 1)}")
                chosen = {engine: predictors[engine] for engine in engines[objects]}
                runs = track_interleaved(chosen, timers, clips[frames[objects]], grid_clicks(objects, *CLIP_HW),
                                         frames[objects], bar)
                for run in runs.values():
                    run.update(summarise(run["frames"]))
                results["runs"][str(objects)] = runs
            for predictor in predictors.values():
                if hasattr(predictor, "close"):
                    predictor.close()
            del predictors, timers
            gc.collect()
        env = {CACHE_VARIABLE: str(ov_cache)}
        for engine in args.engines:
            bar.set_description(f"video: peak RSS, {engine} imports")
            results["floors"][engine] = _in_child(engine, clips[args.peak_frames], 1, None, env)["peak_rss_bytes"]
            bar.update(1)
        for engine, objects in peak_runs:
            bar.set_description(f"video: peak RSS, {engine}, {objects} object{'s' * (objects > 1)}")
            child = _in_child(engine, clips[args.peak_frames], objects, (built.checkpoint, built.bundle), env)
            results["peaks"].setdefault(str(objects), {})[engine] = child
            bar.update(1)
    results["settings"]["run_seconds"] = time.perf_counter() - began
    return _page(results, args.page)


def _ratio(value, base, spec: str = ".2f") -> str:
    return "-" if value is None or not base else format(value / base, spec) + "x"


def _short(engine: str) -> str:
    return ENGINES[engine].removeprefix("VideoPredictor, ")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def fastest_samedge(runs: dict) -> str | None:
    """The samedge engine with the least time per frame: at full memory where every one has it, else filling."""
    engines = [engine for engine in SAMEDGE if engine in runs]
    if not engines:
        return None
    key = "full_median_s" if all(runs[e]["full_median_s"] is not None for e in engines) else "filling_mean_s"
    timed = [engine for engine in engines if runs[engine][key] is not None]
    return min(timed, key=lambda engine: runs[engine][key]) if timed else None


def _timing_rows(results: dict) -> list[list]:
    rows = []
    for objects, runs in results["runs"].items():
        torch_run = runs.get("torch", {})
        for engine, run in runs.items():
            full = run["full_median_s"]
            full_cell = (fmt(full, ".2f") if full is not None else
                         f"not full ({_plural(len(run['frames']), 'frame')} tracked)")
            rows.append([objects, ENGINES[engine], _plural(len(run["frames"]), "frame"),
                         fmt(run["init_s"] + run["prompts_s"], ".2f"), fmt(run["frame0_s"], ".2f"),
                         fmt(run["filling_mean_s"], ".2f"), full_cell,
                         "reference" if engine == "torch" else _ratio(full, torch_run.get("full_median_s")),
                         "reference" if engine == "torch" else _ratio(run["filling_mean_s"],
                                                                      torch_run.get("filling_mean_s")),
                         "reference" if engine == "torch" else fmt(run["min_iou_vs_torch"], ".4f")])
    return rows


def _profile_rows(results: dict) -> list[list]:
    rows = []
    for objects, runs in results["runs"].items():
        engine = fastest_samedge(runs)
        profile = runs[engine].get("profile") if engine else None
        if profile is None:
            continue
        frame = profile["frame_s"]
        frames = profile["frames"]
        which = f"{frames[0]}..{frames[-1]}" if len(frames) > 1 else str(frames[0])
        cells = [f"{fmt(profile['pieces_s'][piece], '.2f')} ({100 * profile['pieces_s'][piece] / frame:.0f}%)"
                 for piece in PIECES]
        rows.append([objects, ENGINES[engine], f"{which} ({profile['memory']})", *cells,
                     f"{fmt(profile['other_s'], '.2f')} ({100 * profile['other_s'] / frame:.0f}%)", fmt(frame, ".2f")])
    return rows


def _memory_rows(results: dict) -> list[list]:
    rows, floors = [], results["floors"]
    for objects, peaks in results["peaks"].items():
        for engine, child in peaks.items():
            peak, floor = child["peak_rss_bytes"], floors.get(engine)
            rows.append([objects, ENGINES[engine], fmt(None if floor is None else floor / GIB, ".2f"),
                         fmt(peak / GIB, ".2f"), fmt(None if floor is None else (peak - floor) / GIB, ".2f"),
                         _ratio(peak, peaks.get("torch", {}).get("peak_rss_bytes")), fmt(child["seconds"], ".0f")])
    return rows


def _findings(results: dict) -> list[str]:
    """What the figures show, from the figures only."""
    settings, lines, verdicts = results["settings"], [], {}
    aim = settings["aim"]
    for objects, runs in results["runs"].items():
        count = _plural(int(objects), "object")
        torch_run, engine = runs.get("torch"), fastest_samedge(runs)
        if torch_run is None or engine is None:
            lines.append(f"- {count}: no ratio (torch and a samedge backend were not both timed).")
            continue
        fast = runs[engine]
        others = "; ".join(f"{_short(e)} {runs[e]['full_median_s']:.2f} s, "
                           f"{_ratio(runs[e]['full_median_s'], torch_run['full_median_s'])}, "
                           f"{100 * (runs[e]['full_median_s'] / fast['full_median_s'] - 1):.1f}% slower"
                           for e in SAMEDGE if e in runs and e != engine and runs[e]["full_median_s"] is not None
                           and fast["full_median_s"] is not None)
        if fast["full_median_s"] is not None and torch_run["full_median_s"] is not None:
            ratio = fast["full_median_s"] / torch_run["full_median_s"]
            verdict = "met" if ratio <= aim else "not met"
            verdicts[count] = ratio <= aim
            lines.append(f"- {count}, memory full (median of {_plural(fast['full_frames'], 'frame')} from frame "
                         f"{settings['full_from']}): {_short(engine)} is the faster "
                         f"samedge backend, {fast['full_median_s']:.2f} s per frame against torch's "
                         f"{torch_run['full_median_s']:.2f} s: {ratio:.2f}x, the aim of <= {aim}x {verdict}"
                         + (f" (the other: {others})" if others else "") + ".")
        elif fast["filling_mean_s"] is not None and torch_run["filling_mean_s"] is not None:
            ratio = fast["filling_mean_s"] / torch_run["filling_mean_s"]
            lines.append(f"- {count}: the memory never filled ({_plural(len(fast['frames']), 'frame')} tracked), so "
                         f"the aim (full memory) is not measured here; while it fills (frames 1.."
                         f"{max(row['frame'] for row in fast['frames'])}), "
                         f"{_short(engine)} takes {fast['filling_mean_s']:.2f} s per "
                         f"frame against torch's {torch_run['filling_mean_s']:.2f} s: {ratio:.2f}x.")
        profile = fast.get("profile")
        if profile:
            shares = sorted(((seconds, piece) for piece, seconds in profile["pieces_s"].items()), reverse=True)
            top_seconds, top = shares[0]
            lines.append(f"  Profile ({_short(engine)}, memory {profile['memory']}): "
                         f"{top} takes {100 * top_seconds / profile['frame_s']:.0f}% of the frame "
                         f"({top_seconds:.2f} s of {profile['frame_s']:.2f}), then "
                         + ", ".join(f"{piece} {100 * seconds / profile['frame_s']:.0f}%"
                                     for seconds, piece in shares[1:])
                         + f"; the numpy around them {100 * profile['other_s'] / profile['frame_s']:.0f}%.")
        lowest = [runs[e]["min_iou_vs_torch"] for e in SAMEDGE if e in runs and runs[e]["min_iou_vs_torch"] is not None]
        if lowest:
            lines.append(f"  Masks against torch's: lowest IoU {min(lowest):.4f} over every frame and object.")
    if verdicts:
        met = [count for count, ok in verdicts.items() if ok]
        lines.insert(0, f"- The aim, the faster samedge backend at <= {aim}x torch's time per frame with the memory "
                        f"full, is met at {', '.join(met) if met else 'none'} of the object counts measured full "
                        f"({', '.join(verdicts)}).")
    left_out = [objects for objects, engines in settings["engines"].items()
                if "onnxruntime" not in engines and any("onnxruntime" in e for e in settings["engines"].values())]
    if left_out:
        timed = [(objects, runs) for objects, runs in results["runs"].items()
                 if "onnxruntime" in runs and "openvino" in runs]
        why = ""
        if timed:
            objects, runs = timed[-1]
            key = "full_median_s" if runs["onnxruntime"]["full_median_s"] is not None else "filling_mean_s"
            ort, ov = runs["onnxruntime"][key], runs["openvino"][key]
            if ort is not None and ov is not None:
                why = (f"; at {_plural(int(objects), 'object')} it took {ort:.2f} s per frame, {ort / ov:.2f}x "
                       f"OpenVINO's {ov:.2f} s")
        lines.append(f"- ONNX Runtime is left out at {', '.join(_plural(int(o), 'object') for o in left_out)} to keep "
                     f"the run's time down (--ort-up-to {settings['ort_up_to']}: each engine adds its whole time per "
                     f"frame){why}; OpenVINO stands for samedge there.")
    for objects, peaks in results["peaks"].items():
        if "torch" not in peaks:
            continue
        base = peaks["torch"]["peak_rss_bytes"]
        memory = "; ".join(f"{_short(e)} {peaks[e]['peak_rss_bytes'] / GIB:.2f} GiB "
                           f"({_ratio(peaks[e]['peak_rss_bytes'], base)})" for e in SAMEDGE if e in peaks)
        lines.append(f"- Peak RSS, {_plural(int(objects), 'object')}, {_plural(settings['peak_frames'], 'frame')}: "
                     f"torch {peaks['torch']['peak_rss_bytes'] / GIB:.2f} GiB; {memory} of torch's.")
    return lines


def _page(results: dict, path: Path, measured: str | None = None) -> Page:
    settings = results["settings"]
    minutes = settings.get("run_seconds")
    intro = (__doc__.split("\n\n", 2)[2].replace("\n", " ").strip()
             + f" This run: {settings['model']} ({settings['img_size']} px, {settings['parameters'] / 1e6:.1f}M "
               f"parameters, seeded weights), a {settings['clip_hw'][0]} x {settings['clip_hw'][1]} clip; "
             + "; ".join(f"{_plural(int(o), 'object')}: {_plural(n, 'frame')} on "
                         f"{', '.join(settings['engines'][o])}" for o, n in settings["frames"].items())
             + f"; peak RSS over {_plural(settings['peak_frames'], 'frame')}; sam2 {settings['sam2']}, torch with "
               f"{settings['threads']} threads"
             + (f"; the whole run took {minutes / 60:.1f} minutes." if minutes else "."))
    body = ("## What the figures show\n\n" + "\n".join(_findings(results))
            + "\n\n## Time per frame (seconds; ratios to torch, same run)\n\n"
              "Frame 0 is the prompted frame: its time is the memory encoding of the prompts. Frames 1..6: the memory "
              "bank filling (mean); from frame 7: full (median). init + prompts: init_state and every click, once.\n\n"
            + table(["objects", "engine", "tracked", "init + prompts", "frame 0", "frames 1..6 (mean)",
                     "full memory (median)", "full / torch", "1..6 / torch", "masks vs torch (min IoU)"],
                    _timing_rows(results))
            + "\n\n## Per-piece profile of the faster samedge backend (seconds per frame, mean; share of the frame)\n\n"
            + table(["objects", "engine", "frames"] + list(PIECES) + ["other (numpy)", "frame"], _profile_rows(results))
            + "\n\n## Peak RSS (GiB, a fresh process each; imports: the same process without the model)\n\n"
            + table(["objects", "engine", "imports", "peak", "peak - imports", "peak / torch's", "process (s)"],
                    _memory_rows(results)))
    return Page(path, "SAM 2.1 video tracking on the CPU: torch, ONNX Runtime and OpenVINO", intro, body,
                data=results, measured=measured)


def main(argv=None) -> int:
    """The peak-RSS child: `python -m benchmarks.video --child ENGINE --clip DIR --objects N
    (--checkpoint C --bundle B | --floor)`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--child", required=True, choices=list(ENGINES))
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--floor", action="store_true", help="imports only, no model")
    args = parser.parse_args(argv)
    if args.floor == (args.checkpoint is not None and args.bundle is not None):
        parser.error("give --checkpoint and --bundle, or --floor")
    if args.floor:
        args.checkpoint = args.bundle = None
    print(json.dumps(peak_child(args.child, args.clip, args.objects, args.checkpoint, args.bundle)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
