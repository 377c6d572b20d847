"""Compress a SAM checkpoint with Birkhoff, or import the authors' tool's output.

    python -m compress.birkhoff CHECKPOINT --out model.birkhoff.safetensors [--variant scaled]
    python -m compress.birkhoff CHECKPOINT --out ... --fill-bits 8 13 --target-mae 7e-4   # other settings
    python -m compress.birkhoff hyper_model.safetensors --out model.birkhoff.safetensors

CHECKPOINT is a samedge or official SAM checkpoint; a `hyper_model.safetensors` written
by Juntongkuki/Birkhoff-Model-Compression is recognised and imported as it is. Next to
--out go a report (`<out>.report.json`) and its plot (`<out>.report.png`). The codec's
settings (defaults: the authors', plus samedge's relative-error fall-back; see
docs/birkhoff.md and docs/benchmarks/rate-distortion.md) are recorded in the checkpoint's
metadata (`birkhoff_settings`) and the report.
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

from ..families import model_types
from ..checkpoint import load_checkpoint
from ..checkpoint_file import CheckpointError, sniff_format
from .codec import DEFAULT_SETTINGS, CodecError, Settings
from .model import SETTINGS_KEY, VARIANTS, compress_model
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


def _limit(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def add_settings_arguments(parser) -> None:
    """One option per codec.Settings field; each defaults to DEFAULT_SETTINGS' value."""
    d = DEFAULT_SETTINGS
    group = parser.add_argument_group("codec settings (docs/birkhoff.md)")
    group.add_argument("--side", type=float, default=d.side, help=f"L, the square's side (default {d.side})")
    group.add_argument("--codebook-sizes", type=int, nargs="+", default=list(d.codebook_sizes), metavar="U",
                       help=f"squares tried in order (default {' '.join(map(str, d.codebook_sizes))})")
    group.add_argument("--fill-bits", type=int, nargs=2, metavar=("LOW", "HIGH"), default=d.fill_bits,
                       help="instead of --codebook-sizes: per index width, the U that fills it (e.g. 8 13)")
    group.add_argument("--max-rings", type=int, default=d.max_rings, help=f"K_max (default {d.max_rings})")
    group.add_argument("--target-mae", type=float, default=d.target_mae, help=f"default {d.target_mae:g}")
    group.add_argument("--fallback-mae", type=_limit, default=d.fallback_mae,
                       help=f"raw above this MAE (default {d.fallback_mae:g}; 'none': never)")
    group.add_argument("--fallback-rel-rmse", type=_limit, default=d.fallback_rel_rmse,
                       help=f"raw above this error relative to the tensor's bulk (default {d.fallback_rel_rmse}; "
                            "'none': never)")
    group.add_argument("--unit-rms", type=float, default=d.unit_rms,
                       help=f"the scaled variant's unit (default {d.unit_rms:g})")


def settings_from(args) -> Settings:
    return Settings(side=args.side, codebook_sizes=tuple(args.codebook_sizes), max_rings=args.max_rings,
                    target_mae=args.target_mae, fallback_mae=args.fallback_mae,
                    fallback_rel_rmse=args.fallback_rel_rmse, unit_rms=args.unit_rms,
                    fill_bits=None if args.fill_bits is None else tuple(args.fill_bits))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compress.birkhoff", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="compressed checkpoint (samedge format)")
    parser.add_argument("--variant", choices=VARIANTS, default="reference",
                        help="reference: the authors' codec; scaled: the same lattice in units of each row's scale")
    parser.add_argument("--model-type", choices=model_types(),
                        help="architecture, when the file does not say (official or imported files)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    add_settings_arguments(parser)
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
        settings = settings_from(args)
        began = time.perf_counter()
        extra = None
        if _is_reference_file(args.checkpoint):
            compressed = read_reference(args.checkpoint, args.model_type)
            compressed.seconds = time.perf_counter() - began
            source_bytes = None  # the dense original is not at hand
            print(f"imported the Birkhoff tool's file {args.checkpoint}")
        else:
            model = load_checkpoint(args.checkpoint, args.model_type)
            compressed = compress_model(model, args.variant, settings=settings)
            source_bytes = args.checkpoint.stat().st_size
            extra = {SETTINGS_KEY: settings.to_dict()}
        # An earlier run's report must never sit beside this run's checkpoint, even if
        # this run is killed between the files: remove it first; the new one names its checkpoint.
        for path in (json_path, png_path):
            path.unlink(missing_ok=True)
        save_compressed(compressed, args.out, extra_metadata=extra)
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
