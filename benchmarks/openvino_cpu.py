"""OpenVINO beside ONNX Runtime on the CPU, per bundle kind: what Session's backend="auto" picks.

    python -m benchmarks.run openvino-cpu [--models demo vit_b] [--variants ...] [--repeats 3]

The results page's bundles (.cache/benchmarks/<model>/, built on first use with its
recipes; vit_b has seeded weights). Per variant, three engines are open at once on the same
files and timed interleaved, so each ratio to ONNX Runtime comes from the same minutes:
ONNX Runtime (a default Session), OpenVINO f32 (samedge's openvino backend) and OpenVINO
bf16 (the CPU plugin's default where the CPU has bfloat16 units; looser answers). Encoder:
astronaut preprocessed; decoder: one point through decoder.onnx, and 16 boxes through
decoder_batch.onnx. Session start: Session(verify=False) in this process, files in the page
cache; OpenVINO compiling, and from its model cache. Peak RSS: a fresh process per row
(benchmarks/peak_memory.py: Session, set_image, one point). The last table compares what
auto picks (runtime/backends/choice.py) with what was measured faster on vit_b's encoder.
Writes docs/benchmarks/openvino-cpu.md.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import statistics
from pathlib import Path

import numpy as np
from skimage import data

from runtime import Session
from runtime.backends.choice import CPU_CHOICE, bundle_kind
from runtime.backends.openvino_backend import CACHE_VARIABLE, OpenVINOBackend
from runtime.bundle import open_bundle

from . import peak_memory
from .latency import Runner, interleaved
from .measure import build_all
from .plans import demo_plan, vit_b_plan
from .report import CACHE, DOCS, Page, fmt, table

PAGE = DOCS / "openvino-cpu.md"
from .variants import DEFINITIONS, ORIGINAL, in_build_order

VARIANTS = (ORIGINAL, "birkhoff-reference", "slimsam-77", "int8", "int4")
ENGINES = ("onnxruntime", "openvino", "openvino-bf16")
BATCH_BOXES = 16
OV_CACHE = CACHE / "openvino-cpu" / "model-cache"


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", default=["demo", "vit_b"], choices=["demo", "vit_b"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(DEFINITIONS))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (vit_b; demo takes 10x)")
    parser.add_argument("--from-json", type=Path, metavar="JSON",
                        help="render the page again from the measurements a run saved (its .json), measuring "
                             "nothing: for when only what the page says of them changed (auto's table)")


def _open(engine: str, bundle, cache_dir=None) -> Session:
    opened = open_bundle(bundle, verify=False)
    if engine == "onnxruntime":
        return Session(bundle, backend="onnxruntime", providers=["CPUExecutionProvider"], verify=False)
    backend = OpenVINOBackend(opened.encoder, opened.decoder, opened.img_size, opened.batch_decoder,
                              precision="bf16" if engine == "openvino-bf16" else "f32", cache_dir=cache_dir,
                              file_hashes=opened.manifest.get("files"))
    return Session(bundle, backend=backend, verify=False)


class _Timed(Runner):
    """latency.Runner plus the batch decoder on BATCH_BOXES boxes."""

    def __init__(self, session: Session, image: np.ndarray):
        super().__init__(session, image)
        height, width = image.shape[:2]
        corners = np.linspace(0.05, 0.45, BATCH_BOXES)
        self.boxes = [[x * width, x * height, (x + 0.5) * width, (x + 0.5) * height] for x in corners]

    def decode_batch(self):
        self.session.predict_batch(boxes=self.boxes, multimask_output=False, upscale=False)


def _latency(bundle, image, repeats: int) -> dict:
    runners = {engine: _Timed(_open(engine, bundle), image) for engine in ENGINES}
    try:
        for runner in runners.values():
            runner.session.set_image(image)  # predict_batch decodes the session's own embedding
            runner.adopt_session_embedding()
        calls = {(engine, part): getattr(runner, part) for engine, runner in runners.items()
                 for part in ("encode", "decode", "decode_batch")}
        runs = interleaved(calls, repeats, warmup=1, stride=3, desc="latency")
        embeddings = {engine: runner.session.image_embedding for engine, runner in runners.items()}
    finally:
        for runner in runners.values():
            runner.session.close()
    result = {f"{engine} {part}": statistics.median(runs[engine, part]) for engine, part in calls}
    for engine in ENGINES:  # how far each engine's embedding is from ONNX Runtime's, same pixels
        result[f"{engine} embedding diff"] = float(np.abs(embeddings[engine] - embeddings["onnxruntime"]).max())
    return result


def _start(bundle, repeats: int) -> dict:
    """Median seconds to open a Session: ONNX Runtime, OpenVINO compiling, OpenVINO from its cache."""
    shutil.rmtree(OV_CACHE, ignore_errors=True)
    calls = {"onnxruntime": lambda: _open("onnxruntime", bundle).close(),
             "openvino compile": lambda: _open("openvino", bundle).close(),
             "openvino cached": lambda: _open("openvino", bundle, OV_CACHE).close()}  # filled by the warm-up
    runs = interleaved(calls, repeats, warmup=1)
    return {f"start {name}": statistics.median(times) for name, times in runs.items()}


def _peaks(bundle) -> dict:
    """Peak RSS of a fresh process per engine (OpenVINO compiling, and from the cache _start filled)."""
    return {"peak onnxruntime": peak_memory.measure(bundle, "onnxruntime"),
            "peak openvino compile": peak_memory.measure(bundle, "openvino", env={CACHE_VARIABLE: "off"}),
            "peak openvino cached": peak_memory.measure(bundle, "openvino", env={CACHE_VARIABLE: str(OV_CACHE)})}


def _ratio(value, base) -> str:
    return fmt(None if value is None or not base else value / base, ".2f") + "x"


def _rows(model: str, variant: str, r: dict) -> tuple[list, list]:
    ort_encoder, ort_decoder, ort_batch = (r[f"onnxruntime {p}"] for p in ("encode", "decode", "decode_batch"))
    speed = [model, variant, r["kind"], fmt(ort_encoder, ".3f")]
    for engine in ENGINES[1:]:
        speed += [f"{r[f'{engine} encode']:.3f} ({_ratio(r[f'{engine} encode'], ort_encoder)})",
                  f"{r[f'{engine} embedding diff']:.1e}"]
    speed += [f"{1e3 * ort_decoder:.1f}", f"{1e3 * r['openvino decode']:.1f} ({_ratio(r['openvino decode'], ort_decoder)})",
              f"{1e3 * ort_batch:.1f}",
              f"{1e3 * r['openvino decode_batch']:.1f} ({_ratio(r['openvino decode_batch'], ort_batch)})"]
    gib = 2 ** 30
    memory = [model, variant, *(fmt(r[f"peak {k}"] / gib, ".2f") for k in ("onnxruntime", "openvino compile",
                                                                         "openvino cached")),
              _ratio(r["peak openvino compile"], r["peak onnxruntime"]),
              *(fmt(r[f"start {k}"], ".2f") for k in ("onnxruntime", "openvino compile", "openvino cached"))]
    return speed, memory


def _auto_rows(results: dict) -> list[list]:
    """Per kind: what auto picks, and what vit_b's encoder (else the demo's) measured faster."""
    rows = []
    for kind, (picked, _) in CPU_CHOICE.items():
        measured = [r for key, r in results.items() if r["kind"] == kind and key.startswith("vit_b")] or \
                   [r for r in results.values() if r["kind"] == kind]
        if not measured:
            rows.append([kind, picked, "not measured in this run", "-"])
            continue
        ratio = statistics.median(r["openvino encode"] / r["onnxruntime encode"] for r in measured)
        faster = "openvino" if ratio < 1 else "onnxruntime"
        rows.append([kind, picked, f"{faster} (OpenVINO f32 {ratio:.2f}x ONNX Runtime)",
                     "yes" if faster == picked else "NO: update runtime/backends/choice.py"])
    return rows


def measure(args) -> Page:
    if args.from_json:
        return _page(json.loads(args.from_json.read_text()), measured=_measured_line(PAGE))
    image = data.astronaut()
    results = {}
    for model in args.models:
        plan = demo_plan(quick=False) if model == "demo" else vit_b_plan(quick=False, work=CACHE)
        built = build_all(dataclasses.replace(plan, variants=in_build_order(args.variants)), CACHE)
        for variant in args.variants:
            bundle = built[variant].bundle
            repeats = args.repeats * (10 if model == "demo" else 1)
            results[f"{model} {variant}"] = {"kind": bundle_kind(open_bundle(bundle, verify=False)),
                                             **_latency(bundle, image, repeats), **_start(bundle, repeats),
                                             **_peaks(bundle)}
    return _page(results)


def _measured_line(page: Path) -> str:
    """The header line of the run that measured the page (kept when the page is rendered again)."""
    found = re.search(r"^(Measured .*?)(?: Rendered again .*)?$", page.read_text(), re.M) if page.is_file() else None
    if found is None:
        raise ValueError(f"{page} has no 'Measured ...' header line to keep; measure the page instead")
    return found.group(1)  # without an earlier "Rendered again ...": this rendering says its own


def _page(results: dict, measured: str | None = None) -> Page:
    """The page of `results` ({"model variant": figures}, as the JSON beside the page holds them)."""
    rows = [_rows(*key.split(" ", 1), r) for key, r in results.items()]
    intro = __doc__.split("\n\n", 2)[2].replace("\n", " ")
    body = ("## Latency (median seconds; ratio to ONNX Runtime, same run; embedding diff: max |difference| from "
            "ONNX Runtime's)\n\n" + table(
                ["model", "variant", "kind", "ORT encoder", "OV f32 encoder", "OV f32 diff", "OV bf16 encoder",
                 "OV bf16 diff", "ORT decoder ms", "OV f32 decoder ms", f"ORT batch of {BATCH_BOXES} ms",
                 f"OV f32 batch of {BATCH_BOXES} ms"], [speed for speed, _ in rows])
            + "\n\n## Memory and start-up (peak RSS GiB of a fresh process; start: seconds to open a Session)\n\n"
            + table(["model", "variant", "peak ORT", "peak OV (compiling)", "peak OV (cached)", "OV / ORT peak",
                     "start ORT", "start OV (compiling)", "start OV (cached)"], [memory for _, memory in rows])
            + "\n\n## What auto picks on a CPU\n\n"
            + table(["bundle kind", "auto picks", "measured faster (vit_b encoder)", "agree"], _auto_rows(results)))
    return Page(PAGE, "OpenVINO and ONNX Runtime on the CPU", intro, body, data=results, measured=measured)
