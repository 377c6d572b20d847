"""ONNX Runtime's session options and a long-lived Session's memory: what samedge sets and why.

    python -m benchmarks.run ort-memory [--models vit_b] [--runs 3]

Each setting opens the bundle's encoder in a fresh process and encodes the same image
`--runs` times: session start, the seconds of each run, and the process's peak resident
set (VmHWM, /proc) after each run: the whole process's, its imports included (the same
in every row: numpy, onnxruntime, onnx, scikit-image; no torch). "ONNX Runtime's defaults" is a plain InferenceSession,
as samedge opened one before; the two others are runtime.Session as it is now. The bundles
are shared with the session-open page (.cache/benchmarks/session-open). Writes
docs/benchmarks/ort-memory.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from skimage import data

from runtime import Session
from runtime.bundle import ENCODER_FILE, open_bundle
from runtime.transforms import preprocess

from . import peak_memory
from .report import DOCS, Page, fmt, table

SETTINGS = {
    "ort-defaults": "ONNX Runtime's defaults (arena, memory pattern)",
    "samedge": "runtime.Session() (arena, no memory pattern)",
    "samedge-low-memory": "runtime.Session(low_memory=True) (neither)",
}


def add_arguments(parser) -> None:
    parser.add_argument("--models", nargs="+", default=["vit_b"], help="demo or a model type (seeded)")
    parser.add_argument("--runs", type=int, default=3, help="encoder runs per fresh process")


def child(bundle: Path, setting: str, runs: int) -> dict:
    """In this process: open the encoder as `setting` says and run it `runs` times."""
    opened = open_bundle(bundle, verify=False)
    pixels = preprocess(data.astronaut(), opened.img_size, opened.pixel_mean, opened.pixel_std)
    began = time.perf_counter()
    if setting == "ort-defaults":
        plain = ort.InferenceSession(str(bundle / ENCODER_FILE), providers=["CPUExecutionProvider"])
        name = plain.get_inputs()[0].name

        def encode():
            return plain.run(None, {name: pixels})
    else:
        session = Session(bundle, providers=["CPUExecutionProvider"], low_memory=setting == "samedge-low-memory",
                          verify=False)
        def encode():
            return session.backend.encode(pixels)
    start = time.perf_counter() - began
    seconds, peaks = [], []
    for _ in range(runs):
        began = time.perf_counter()
        encode()
        seconds.append(time.perf_counter() - began)
        peaks.append(peak_memory.peak_bytes())
    return {"start": start, "seconds": seconds, "peaks": peaks}


def in_fresh_process(bundle: Path, setting: str, runs: int) -> dict:
    return peak_memory.in_fresh_process("benchmarks.ort_memory", ["--child", setting, str(bundle), str(runs)])


def measure(args) -> Page:
    # Imported here, not at the top: the child processes import this module, and bundle_for
    # brings export (torch, 0.63 GiB resident) into a peak that must be the Session's alone.
    from .session_open import bundle_for

    rows, results = [], {}
    for model_type in args.models:
        bundle = bundle_for(model_type)
        for setting, label in SETTINGS.items():
            result = results[f"{model_type} {setting}"] = in_fresh_process(bundle, setting, args.runs)
            later = result["seconds"][1:] or result["seconds"]
            rows.append([model_type, label, fmt(result["start"], ".2f"),
                         " / ".join(fmt(s, ".2f") for s in result["seconds"]), fmt(float(np.median(later)), ".2f"),
                         " / ".join(fmt(p / 2**30, ".2f") for p in result["peaks"])])
    intro = ("One fresh process per row, the same astronaut image encoded each run. ORT's memory pattern plans the next run's allocations from the last one; with the "
             "CPU arena on, the second run takes a fresh block beside the first, so a long-lived session "
             "peaks near twice its first run. samedge turns the pattern off (it saves nothing measurable on "
             "the CPU: compare the later runs' seconds) and keeps the arena, which low_memory also turns off "
             "for small devices.")
    body = table(["model", "setting", "session start (s)", "each run (s)", "median of runs 2.. (s)",
                  "peak RSS after each run (GiB)"], rows)
    return Page(DOCS / "ort-memory.md", "ONNX Runtime session options: a long-lived Session's memory", intro, body,
                data=results)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("SETTING", "BUNDLE", "RUNS"), required=True)
    setting, bundle, runs = parser.parse_args(argv).child
    if setting not in SETTINGS:
        parser.error(f"unknown setting {setting!r}; choose one of {sorted(SETTINGS)}")
    print(json.dumps(child(Path(bundle), setting, int(runs))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
