"""Turn a checkpoint into a deployable bundle, and prove it with a parity check.

    python -m export.build --target cpu                       # the bundled demo model
    python -m export.build --target jetson --checkpoint sam_vit_b_01ec64.pth --model-type vit_b
    python -m export.build --target jetson --model-type vit_b --seeded-weights --compress birkhoff

The bundle is assembled in a temporary directory beside --out and renamed into place
only when every file is written and checked, so an interrupted build leaves nothing
half-written. See docs/formats.md for what a bundle holds.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from compress.architectures import ARCHITECTURES
from runtime.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    DECODER_FILE,
    ENCODER_FILE,
    GPU_PARITY_FILE,
    MANIFEST,
    PARITY_FILE,
    SINGLE_MASK_DECODER_FILE,
    TENSORRT_FOLDER,
    sha256_file,
)

from .staging import pinned_files, prepare_target, staged_bundle

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "compress" / "weights" / "demo_sam.safetensors"
TARGETS = ("cpu", "desktop", "jetson")
# "slimsam-R+birkhoff" stacks them: prune and distil first, then hyper-compress the pruned model.
COMPRESSIONS = ("birkhoff", "slimsam-50", "slimsam-77", "slimsam-50+birkhoff", "slimsam-77+birkhoff")
# A model compressed during the build travels inside the bundle: parity's reference
# is that compressed model, and the runtime never needs the original.
COMPRESSED_CHECKPOINT = "model.birkhoff.safetensors"
PRUNED_CHECKPOINT = "model.slimsam.safetensors"
# fp16 engines answer within fp16 rounding: looser than float32's defaults (runtime.parity).
FP16_MIN_IOU, FP16_MAX_RELATIVE_LOGIT_ERROR = 0.97, 0.05


BUNDLE_PACKAGES = ("samedge", "torch", "onnx", "onnxruntime", "segment-anything", "numpy")


def package_versions(packages=BUNDLE_PACKAGES) -> dict:
    """Python's version and each package's (None when not installed)."""
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def parameter_count(model) -> int:
    """Weights of the model, a HyperLinear's encoded weight counted as the dense one it stands for."""
    count = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if hasattr(module, "codes") and hasattr(module, "in_features"):
            count += module.in_features * module.out_features
    return count


def _manifest(config, parameters: int, checkpoint: Path, checkpoint_sha256: str, target: str, root: Path,
              files: dict, parity: dict | None, compression: dict | None = None, tensorrt: dict | None = None,
              model_type: str | None = None) -> dict:
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "target": target,
        "precision": "fp32",
        "model": {
            "name": config.name,
            "architecture": config.to_dict(),
            # Relative when the checkpoint is inside the bundle (a compressed build).
            "checkpoint": checkpoint.name if checkpoint.parent == root else str(checkpoint.resolve()),
            "checkpoint_sha256": checkpoint_sha256,
            # The architecture the user named (None: the checkpoint itself says): parity's
            # reference is read with it, from the checkpoint, not from this manifest.
            "model_type": model_type if checkpoint.parent != root else None,
            "parameters": parameters,
        },
        "preprocessing": {
            "img_size": config.img_size,
            "pixel_mean": list(config.pixel_mean),
            "pixel_std": list(config.pixel_std),
            "resize": "longest side to img_size, Pillow bilinear; pad bottom/right with zeros",
        },
        "decoder": {
            "signature": "official segment_anything ONNX decoder (opset 17)",
            "masks": {DECODER_FILE: 4, SINGLE_MASK_DECODER_FILE: 1},
            "low_res_size": config.low_res_size,
        },
        "files": files,
        "versions": package_versions(),
        "parity": None if parity is None else {"passed": parity["passed"], **parity["worst"]},
        "compression": compression,
        "tensorrt": tensorrt,
    }
    return manifest


def build_bundle(out: Path, target: str = "cpu", checkpoint: Path | None = None,
                 model_type: str | None = None, run_parity: bool = True, overwrite: bool = False,
                 compress: str | None = None, variant: str = "reference", slimsam_images=None,
                 slimsam_settings=None) -> dict:
    """Write a bundle to `out`; returns its parity report (None when skipped).

    `slimsam_images` (uint8 RGB arrays) and `slimsam_settings` (compress.slimsam's
    SlimSettings) are needed for the slimsam compressions: distillation needs images.
    """
    from compress import load_checkpoint

    from .onnx_export import export_decoder, export_encoder

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {TARGETS}")
    if compress not in (None,) + COMPRESSIONS:
        raise ValueError(f"unknown compression {compress!r}; choose one of {COMPRESSIONS}")
    checkpoint = Path(checkpoint or DEFAULT_CHECKPOINT)
    out = prepare_target(out, overwrite, inputs=[checkpoint])
    steps = (["load checkpoint"] + ([f"compress ({compress})"] if compress else []) + ["export encoder", "export decoders"]
             + (["tensorrt"] if target != "cpu" else []) + (["parity"] if run_parity else []) + ["manifest"])
    with staged_bundle(out) as work, tqdm(total=len(steps), desc="build", unit="step") as bar:
        def step(name):
            bar.set_postfix_str(name)

        step("load checkpoint")
        model = load_checkpoint(checkpoint, model_type)
        bar.update()
        compression = None
        if compress:
            step(f"compress ({compress})")
            model, checkpoint, compression = _compress_stages(work, model, checkpoint, compress, variant,
                                                              slimsam_images, slimsam_settings)
            bar.update()
        step("export encoder")
        export_encoder(model, work / ENCODER_FILE)
        bar.update()
        step("export decoders")
        export_decoder(model, work / DECODER_FILE)
        export_decoder(model, work / SINGLE_MASK_DECODER_FILE, return_single_mask=True)
        bar.update()
        tensorrt = None
        if target != "cpu":
            step("tensorrt")
            tensorrt = _tensorrt_into(work / TENSORRT_FOLDER, model, target, work / ENCODER_FILE)
            bar.update()

        # Parity loads the checkpoint again beside the ONNX Runtime sessions: without this
        # copy of the weights, vit_h's build fits in less memory.
        config, parameters = model.config, parameter_count(model)
        del model
        # Hashed once: the parity step adds only reports, which are not pinned (vit_h: 2.5 GB twice).
        files, checkpoint_sha256 = pinned_files(work), sha256_file(checkpoint)

        def manifest(report):
            return json.dumps(_manifest(config, parameters, checkpoint, checkpoint_sha256, target, work, files,
                                        report, compression, tensorrt, model_type), indent=2)

        report = None
        if run_parity:
            step("parity")
            # The manifest names the checkpoint; write it first so Session can open the bundle.
            (work / MANIFEST).write_text(manifest(None))
            report = _parity_into(work, out, checkpoint, tensorrt)
            bar.update()
        step("manifest")
        (work / MANIFEST).write_text(manifest(report))
        bar.update()
    return report


def _parity_into(work: Path, out: Path, checkpoint: Path, tensorrt: dict | None) -> dict:
    """Parity of the ONNX files (and of the engines, when built) against the checkpoint."""
    from runtime.parity import Thresholds, run_parity

    report = run_parity(work, checkpoint, show_progress=False, backend="onnxruntime")
    report["bundle"] = str(out)
    (work / PARITY_FILE).write_text(json.dumps(report, indent=2))
    if tensorrt and tensorrt["status"] == "built":
        engines = run_parity(work, checkpoint, Thresholds(FP16_MIN_IOU, FP16_MAX_RELATIVE_LOGIT_ERROR),
                             show_progress=False, backend="tensorrt")
        (work / GPU_PARITY_FILE).write_text(json.dumps(engines, indent=2))
        tensorrt["parity"] = {"passed": engines["passed"], **engines["worst"]}
        report["passed"] = report["passed"] and engines["passed"]
    return report


def _tensorrt_into(folder: Path, model, target: str, encoder_onnx: Path) -> dict:
    """The bundle's tensorrt/ folder: ONNX files for TensorRT, build script, engines if we can."""
    from compress.birkhoff.hyper_linear import HyperLinear

    from .tensorrt_build import BUILD_SCRIPT, MAX_POINTS, build_engines, prepare_folder, tensorrt_version
    from .tensorrt_onnx import export_tensorrt_inputs

    plugin = any(isinstance(m, HyperLinear) for m in model.modules())
    export_tensorrt_inputs(model, folder, encoder_onnx=encoder_onnx)
    prepare_folder(folder, target, plugin)
    entry = {"folder": TENSORRT_FOLDER, "build_script": f"{TENSORRT_FOLDER}/{BUILD_SCRIPT}",
             "precision": {"encoder": "fp16 (LayerNorm, softmax, LayerNorm2d in fp32)", "decoder": "fp32"},
             "hyper_linear_plugin": plugin, "max_points": MAX_POINTS}
    if tensorrt_version() is None:
        entry["status"] = "pending"
        entry["todo"] = (f"build the engines on the {target} that will run them: bash {TENSORRT_FOLDER}/{BUILD_SCRIPT} "
                         "(needs CUDA, CMake and TensorRT >= 10.3); then runtime.Session(bundle) uses them")
    else:
        entry["status"] = "built"
        entry["engines"] = build_engines(folder, target, plugin)
    return entry


def _compress_stages(work: Path, model, checkpoint: Path, compress: str, variant: str, arrays, settings):
    """Run each stage of `compress` in order; (model, its checkpoint, manifest entry).

    A stacked build keeps only the last stage's checkpoint in the bundle; the entry lists
    every stage, and its `ratio` is the original checkpoint's bytes over the final one's.
    """
    source = checkpoint
    stages = []
    for stage in compress.split("+"):
        if stage == "birkhoff":
            model, compressed, entry = _compress_into(work, model, checkpoint, variant)
        else:
            model, compressed, entry = _slimsam_into(work, model, checkpoint, stage, arrays, settings)
        if checkpoint.parent == work:  # an earlier stage's file: superseded
            checkpoint.unlink()
        checkpoint = compressed
        stages.append(entry)
    if len(stages) == 1:
        return model, checkpoint, stages[0]
    entry = {"method": compress, "stages": stages, "source_checkpoint": str(source.resolve()),
             "source_bytes": source.stat().st_size, "compressed_bytes": checkpoint.stat().st_size,
             "ratio": source.stat().st_size / checkpoint.stat().st_size,
             "seconds": sum(s["seconds"] for s in stages)}
    return model, checkpoint, entry


def _compress_into(work: Path, model, source: Path, variant: str):
    """Birkhoff-compress `model` into the bundle; (model, its checkpoint, manifest entry)."""
    from compress.birkhoff.model import compress_model
    from compress.birkhoff.storage import save_compressed

    compressed = compress_model(model, variant)
    path = work / COMPRESSED_CHECKPOINT
    save_compressed(compressed, path, extra_metadata={"source_checkpoint_sha256": sha256_file(source)})
    entry = {
        "method": "birkhoff", "variant": variant, "source_checkpoint": str(source.resolve()),
        "source_bytes": source.stat().st_size, "compressed_bytes": path.stat().st_size,
        "ratio": source.stat().st_size / path.stat().st_size, "seconds": compressed.seconds,
        "parameters": parameter_count(compressed.model),
    }
    return compressed.model, path, entry


def _slimsam_into(work: Path, model, source: Path, compress: str, arrays, settings):
    """Prune and distil `model` with SlimSAM into the bundle; (model, checkpoint, manifest entry)."""
    from compress.checkpoint import save_checkpoint
    from compress.slimsam.pipeline import PUBLISHED_RATIOS, SlimSettings, preprocess_images, slim

    if not arrays or len(arrays) < 3:
        raise ValueError(f"--compress {compress} distils on images: pass --images DIR (or --synthetic N)")
    settings = settings or SlimSettings()
    settings.ratio = PUBLISHED_RATIOS[compress]
    tensors = preprocess_images(arrays, model.config)
    val_count = max(1, len(tensors) // 20)
    began = datetime.datetime.now()
    with tempfile.TemporaryDirectory(dir=work) as scratch:  # inside the bundle's staging: never left behind
        slimmed = slim(model, tensors[:-val_count], tensors[-val_count:], settings, Path(scratch))
    path = work / PRUNED_CHECKPOINT
    save_checkpoint(slimmed, path, extra_metadata={"slimsam": {"ratio": settings.ratio, "source": str(source)}})
    config = slimmed.config
    entry = {"method": "slimsam", "ratio": settings.ratio, "importance": settings.importance,
             "source_checkpoint": str(source.resolve()), "source_bytes": source.stat().st_size,
             "compressed_bytes": path.stat().st_size, "images": len(tensors) - val_count,
             "epochs": [settings.epochs1, settings.epochs2], "embed": config.encoder_embed_dim,
             "mlp": list(config.encoder_mlp_dims), "parameters_before": parameter_count(model),
             "parameters_after": parameter_count(slimmed),
             "seconds": (datetime.datetime.now() - began).total_seconds()}
    return slimmed, path, entry


def seeded_checkpoint(model_type: str, folder: Path) -> Path:
    """<folder>/<type>_seed0.safetensors: the architecture with seeded weights, written once."""
    from compress import build_sam, save_checkpoint

    path = folder / f"{model_type}_seed0.safetensors"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        save_checkpoint(build_sam(model_type, seed=0), path)
    return path


def main(argv=None) -> int:
    from runtime.parity import summary

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=TARGETS, default="cpu")
    parser.add_argument("--checkpoint", type=Path, help="default: the bundled demo model")
    parser.add_argument("--model-type", choices=sorted(ARCHITECTURES),
                        help="architecture of a .pth checkpoint (checked against its shapes); needed when the "
                             "file cannot say, e.g. a state dict of the demo model")
    parser.add_argument("--seeded-weights", action="store_true",
                        help="with --model-type: that architecture with seeded random weights (no download; "
                             "for trying the pipeline, not for real masks)")
    parser.add_argument("--out", type=Path, help="default: bundles/<model>-<target>")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument("--skip-parity", action="store_true", help="do not run the parity check")
    parser.add_argument("--compress", choices=COMPRESSIONS,
                        help="compress the model first (Birkhoff: HyperLinear nodes in the ONNX files)")
    parser.add_argument("--variant", choices=("reference", "scaled"), default="reference",
                        help="Birkhoff codec variant (default: reference; see docs/birkhoff.md)")
    parser.add_argument("--images", type=Path, help="SlimSAM: folder of unlabelled images to distil on")
    parser.add_argument("--synthetic", type=int, help="SlimSAM: distil on N synthetic shape images (demo model)")
    parser.add_argument("--slim-epochs", type=int, nargs=2, metavar=("STEP1", "STEP2"),
                        help="SlimSAM: distillation epochs of each step (default 40 80, the paper's)")
    args = parser.parse_args(argv)
    if args.seeded_weights and (args.checkpoint or not args.model_type):
        parser.error("--seeded-weights needs --model-type and no --checkpoint")
    if args.model_type and not (args.checkpoint or args.seeded_weights):
        parser.error("--model-type needs --checkpoint (or --seeded-weights to try the architecture)")
    if args.seeded_weights:
        args.checkpoint = seeded_checkpoint(args.model_type, Path("bundles"))
    name = args.model_type or ("demo" if args.checkpoint is None else Path(args.checkpoint).stem)
    stem = f"{name}-{args.compress}" if args.compress else name
    out = args.out or Path("bundles") / f"{stem}-{args.target}"
    arrays, settings = None, None
    if args.compress and "slimsam" in args.compress:
        from compress.slimsam.__main__ import load_folder, synthetic_images
        from compress.slimsam.pipeline import SlimSettings

        if not (args.images or args.synthetic):
            parser.error(f"--compress {args.compress} needs --images DIR or --synthetic N")
        try:
            arrays = synthetic_images(args.synthetic) if args.synthetic else load_folder(args.images)
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        settings = SlimSettings()
        if args.slim_epochs:
            settings.epochs1, settings.epochs2 = args.slim_epochs
            settings.feature_epochs = max(1, settings.epochs1 // 2)
            settings.alpha_epochs = max(1, settings.epochs2 // 2)
    try:
        report = build_bundle(out, args.target, args.checkpoint, args.model_type,
                              run_parity=not args.skip_parity, overwrite=args.overwrite,
                              compress=args.compress, variant=args.variant, slimsam_images=arrays,
                              slimsam_settings=settings)
    except (ValueError, FileExistsError) as err:  # CheckpointError, BundleError, TensorRTError included
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"bundle written to {out}")
    tensorrt = json.loads((out / MANIFEST).read_text()).get("tensorrt")
    if tensorrt and tensorrt["status"] == "pending":
        print(f"TensorRT engines: {tensorrt['todo']}")
    if report is not None:
        print(summary(report))
        return 0 if report["passed"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
