"""What checking a bundle's hashes adds to opening it: Session(verify=True) vs verify=False.

    python -m benchmarks.session_open [--models demo vit_b] [--repeats 5]

Both ways are timed in this one process, alternating, after a warm-up open (so the files
are in the page cache for both), together with the hashing alone (Bundle.verify). The
bundles are built once (vit_b with seeded weights) under .cache/benchmarks/session-open.
Writes docs/benchmarks/session-open.md.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

from .report import fmt, machine, table, write_page

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "benchmarks" / "session-open"
DOCS = REPO / "docs" / "benchmarks" / "session-open.md"


def bundle_for(model_type: str) -> Path:
    from export.build import DEFAULT_CHECKPOINT, build_bundle, seeded_checkpoint

    out = CACHE / f"{model_type}-cpu"
    if not (out / "manifest.json").is_file():
        checkpoint = DEFAULT_CHECKPOINT if model_type == "demo" else seeded_checkpoint(model_type, CACHE)
        build_bundle(out, "cpu", checkpoint, run_parity=False, overwrite=out.exists())
    return out


def _seconds(fn) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(bundle: Path, repeats: int) -> dict:
    from runtime import Session, open_bundle

    Session(bundle)  # warm-up: files read once, ONNX Runtime initialised
    opened, unverified, hashing = [], [], []
    for _ in range(repeats):
        opened.append(_seconds(lambda: Session(bundle, verify=True)))
        unverified.append(_seconds(lambda: Session(bundle, verify=False)))
        hashing.append(_seconds(open_bundle(bundle, verify=False).verify))
    listed = open_bundle(bundle, verify=False).manifest["files"]
    return {"bytes": sum(info["bytes"] for info in listed.values()), "verified": statistics.median(opened),
            "unverified": statistics.median(unverified), "hashing": statistics.median(hashing)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["demo", "vit_b"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = []
    for model_type in args.models:
        result = measure(bundle_for(model_type), args.repeats)
        rows.append([model_type, fmt(result["bytes"] / 1e6, ".1f"), fmt(result["unverified"], ".3f"),
                     fmt(result["verified"], ".3f"), fmt(result["hashing"], ".3f"),
                     fmt(result["verified"] / result["unverified"], ".2f")])
    where = machine()
    intro = (f"`python -m benchmarks.session_open --models {' '.join(args.models)} --repeats {args.repeats}` on "
             f"{where['cpu']} ({where['cores']} cores), {where['date']}. Median seconds of `Session(bundle)` "
             "(ONNX Runtime, files in the page cache) with and without the SHA-256 check of every file the "
             "manifest lists, and of the hashing alone; the ratio is from the same run. Session hashes in a "
             "thread while the backend loads the models, so the check costs little more than the longer of the two.")
    text = table(["model", "listed MB", "open, verify=False (s)", "open, verify=True (s)", "hashing (s)",
                  "ratio"], rows)
    write_page(DOCS, "Opening a bundle: the cost of checking its hashes", intro, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
