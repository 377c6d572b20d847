"""Compress a SAM checkpoint with Birkhoff, or import the authors' tool's output.

    python -m compress.birkhoff CHECKPOINT --out model.birkhoff.safetensors [--variant scaled]
    python -m compress.birkhoff hyper_model.safetensors --out model.birkhoff.safetensors

CHECKPOINT is a samedge or official SAM checkpoint; a `hyper_model.safetensors` written
by Juntongkuki/Birkhoff-Model-Compression is recognised and imported as it is. Next to
--out go a report (`<out>.report.json`) and its plot (`<out>.report.png`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from safetensors import safe_open

from runtime.atomic import OutputError, check_output_file
from runtime.bundle import sha256_file

from ..architectures import ARCHITECTURES
from ..checkpoint import load_checkpoint
from ..checkpoint_file import CheckpointError, sniff_format
from .codec import CodecError
from .model import VARIANTS, compress_model
from .reference_layout import read_reference
from .report import build_report, write_report
from .storage import save_compressed


def _is_reference_file(path: Path) -> bool:
    if sniff_format(path) != "safetensors":
        return False
    with safe_open(str(path), framework="pt") as f:
        return "rect_l" in f.keys() and "num_inner_list" in f.keys()


def report_paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(out.name + ".report.json"), out.with_name(out.name + ".report.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compress.birkhoff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="compressed checkpoint (samedge format)")
    parser.add_argument("--variant", choices=VARIANTS, default="reference",
                        help="reference: the authors' codec; scaled: the same lattice in units of each row's scale")
    parser.add_argument("--model-type", choices=sorted(ARCHITECTURES),
                        help="architecture, when the file does not say (official or imported files)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    json_path, png_path = report_paths(args.out)
    try:
        for path in (args.out, json_path, png_path):  # before the work, not after it
            check_output_file(path)
        if Path(os.path.abspath(args.out)) == Path(os.path.abspath(args.checkpoint)):
            raise OutputError(f"--out {args.out} is the input checkpoint; name another file")
        if args.checkpoint.is_dir():
            raise CheckpointError(f"checkpoint {args.checkpoint} is a directory; pass the checkpoint file itself")
        if not args.checkpoint.is_file():
            raise CheckpointError(f"checkpoint {args.checkpoint} does not exist")
        began = time.perf_counter()
        if _is_reference_file(args.checkpoint):
            compressed = read_reference(args.checkpoint, args.model_type)
            compressed.seconds = time.perf_counter() - began
            source_bytes = None  # the dense original is not at hand
            print(f"imported the Birkhoff tool's file {args.checkpoint}")
        else:
            model = load_checkpoint(args.checkpoint, args.model_type)
            compressed = compress_model(model, args.variant)
            source_bytes = args.checkpoint.stat().st_size
        # An earlier run's report must never sit beside this run's checkpoint, even if
        # this run is killed between the files: remove it first; the new one names its checkpoint.
        for path in (json_path, png_path):
            path.unlink(missing_ok=True)
        save_compressed(compressed, args.out)
    except (CheckpointError, CodecError, OutputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = build_report(compressed, source_bytes, args.out.stat().st_size)
    report["checkpoint"] = {"file": args.out.name, "sha256": sha256_file(args.out)}
    write_report(report, json_path, None if args.no_plot else png_path)
    ratio = f"ratio {report['ratio']:.2f}, " if report["ratio"] else ""
    print(f"wrote {args.out} ({report['compressed_bytes'] / 2**20:.1f} MiB, {ratio}"
          f"{report['hyper_linear_layers']} HyperLinear layers, {len(report['fell_back'])} tensors raw) "
          f"in {report['seconds']:.1f} s; report {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
