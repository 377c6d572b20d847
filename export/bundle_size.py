"""What a bundle weighs against the weights it carries, each stored once.

    python -m export.bundle_size BUNDLE

`weights_bytes` counts every distinct initializer of the bundle's ONNX files once (by content),
wherever it is stored; `total_bytes` is every file of the bundle. Their ratio is what storage
and every over-the-air update pay beyond the model itself (a checkpoint kept inside for
parity, the clients' encoder, graphs, copies).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import onnx


def weights_bytes(files) -> int:
    """Bytes of the distinct initializers of the ONNX `files` (external data read where it is)."""
    seen, total = set(), 0
    for path in files:
        model = onnx.load(str(path), load_external_data=True)
        for tensor in model.graph.initializer:
            content = tensor.raw_data or tensor.SerializeToString()
            key = hashlib.sha256(content).digest()
            if key not in seen:
                seen.add(key)
                total += len(content)
        del model
    return total


def size_report(root) -> dict:
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    total = sum(p.stat().st_size for p in files)
    weights = weights_bytes(p for p in files if p.suffix == ".onnx")
    largest = sorted(files, key=lambda p: p.stat().st_size, reverse=True)[:6]
    return {"total_bytes": total, "weights_bytes": weights, "ratio": total / weights if weights else None,
            "largest": {p.relative_to(root).as_posix(): p.stat().st_size for p in largest}}


def summary(report: dict) -> str:
    mb = 1e6
    return (f"bundle {report['total_bytes'] / mb:.1f} MB for {report['weights_bytes'] / mb:.1f} MB of weights stored "
            f"once ({report['ratio']:.2f}x)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--json", action="store_true", help="the whole report as JSON")
    args = parser.parse_args(argv)
    report = size_report(args.bundle)
    print(json.dumps(report, indent=2) if args.json else summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
