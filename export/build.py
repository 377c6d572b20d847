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
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from compress import load_checkpoint, parameter_count, seeded_checkpoint
from compress.families import config_to_dict, family_of, model_types
from compress.families.fused_attention import FORMS as ATTENTION_FORMS, PLAIN, attention_form
from compress.birkhoff.hyper_linear import HyperLinear
from compress.demo import DEFAULT_CHECKPOINT
from compress.birkhoff.model import VARIANTS
from compress.recipe import COMPRESSIONS, Recipe, parse_recipe
from compress.slimsam.images import load_folder, synthetic_images
from compress.slimsam.settings import SlimSettings
from compress.stages import apply
from runtime.bundle import (BATCH_DECODER_FILE, ENCODER_FILE, GPU_PARITY_FILE, MANIFEST, PARITY_FILE, TENSORRT_FOLDER,
                            sha256_file)
from runtime.bundle_writer import BundleWriter
from runtime.parity import Thresholds, failed_rows, run_parity, summary

from .clients import write_client_files
from .onnx_export import coded_tensors, export_pieces, export_tensors
from .bundle_size import size_report, summary as size_summary
from .provenance import model_digest, preprocessing_of, stamp_all
from .shared_weights import share_weights
from .tensorrt_build import BUILD_SCRIPT, MAX_POINTS, MAX_PROMPTS, build_engines, prepare_folder, tensorrt_version
from .tensorrt_onnx import export_tensorrt_inputs
from .triton import build_repository

TARGETS = ("cpu", "desktop", "jetson")
# fp16 engines answer within fp16 rounding: looser than float32's defaults (runtime.parity).
FP16_MIN_IOU, FP16_MAX_RELATIVE_LOGIT_ERROR = 0.97, 0.05
# Not measured on an engine yet (no GPU here): fp16 scores (predicted IoU, segment-everything's
# stability), as the logits, within about 5 %.
FP16_SCORE_MARGIN = 0.05


def has_hyper_linear(model) -> bool:
    return any(isinstance(m, HyperLinear) for m in model.modules())


def _manifest(config, parameters: int, checkpoint: Path, checkpoint_sha256: str, target: str, root: Path,
              parity: dict | None, compression: dict | None = None, tensorrt: dict | None = None,
              model_type: str | None = None, samedge_nodes: bool = False, clients: dict | None = None,
              digest: str | None = None, attention: str = PLAIN) -> dict:
    """The manifest's sections (BundleWriter adds the format stamp, files and versions)."""
    beside = compression is not None and checkpoint.parent == root.parent
    family = family_of(config)
    sections = family.manifest(config)  # what the runtime reads: pre-processing and the decoders' signature
    return {
        "target": target,
        "precision": "fp32",
        "model": {
            "name": config.name,
            "family": family.name,
            "architecture": config_to_dict(config),
            # Relative when the checkpoint is inside the bundle (a compressed build).
            # Relative when the build wrote it (a compressed build): in the bundle, or beside it (--checkpoint-outside).
            "checkpoint": (checkpoint.name if checkpoint.parent == root else
                           os.path.relpath(checkpoint, root) if beside else str(checkpoint.resolve())),
            "checkpoint_sha256": checkpoint_sha256,
            # The architecture the user named (None: the checkpoint itself says): parity's
            # reference is read with it, from the checkpoint, not from this manifest.
            "model_type": model_type if checkpoint.parent != root and not beside else None,
            "parameters": parameters,
            # The ONNX files hold samedge HyperLinear / HyperTensor nodes (Birkhoff codes): the
            # ONNX Runtime backend decodes them (runtime/backends/ort_backend.py).
            "samedge_nodes": samedge_nodes,
            # SHA-256 of the exported weights, also in every ONNX file's metadata (export/provenance.py):
            # runtime.bundle refuses a file exported from another model.
            "digest": digest,
        },
        **sections,
        # The form of the encoders' and memory pieces' attention (compress/families/fused_attention.py);
        # the decoders, the clients' and the TensorRT files are always plain.
        "attention": attention,
        # Files for AnyLabeling and samexporter (export/clients.py).
        "clients": clients,
        # runtime.Session warns on opening a bundle whose parity failed, naming these rows.
        "parity": None if parity is None else {"passed": parity["passed"], **parity["worst"],
                                               "failed": failed_rows(parity)},
        "compression": compression,
        "tensorrt": tensorrt,
    }


def build_bundle(out: Path, target: str = "cpu", checkpoint: Path | None = None,
                 model_type: str | None = None, run_parity: bool = True, overwrite: bool = False,
                 recipe: Recipe | None = None, with_clients: bool = True, checkpoint_outside: bool = False,
                 attention: str = PLAIN) -> dict | None:
    """Write a bundle to `out`; returns its parity report (None when skipped).

    `recipe` (compress.recipe.parse_recipe) compresses the model first (the model's family refuses
    what it does not take); its SlimSAM stages carry the images they distil on. `with_clients`: the
    files AnyLabeling and samexporter open, in the family's format (export/clients.py; a device that
    only runs samedge needs none). `checkpoint_outside`:
    a compressed build's checkpoint (parity's reference) is kept beside the bundle, as
    `<out>.<checkpoint name>`, not in it. `attention`: "plain" or "fused" (one ONNX Runtime
    MultiHeadAttention node per attention in the encoders and memory pieces; fused_attention.py)."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {TARGETS}")
    if attention not in ATTENTION_FORMS:
        raise ValueError(f"unknown attention form {attention!r}; choose one of {ATTENTION_FORMS}")
    checkpoint = Path(checkpoint or DEFAULT_CHECKPOINT)
    outside = None
    if checkpoint_outside:
        if recipe is None:
            raise ValueError("--checkpoint-outside keeps a compressed build's checkpoint beside the bundle; without "
                             "--compress the bundle holds no checkpoint (the manifest names yours)")
        outside = Path(os.path.abspath(out)).parent / f"{Path(out).name}.{recipe.stages[-1].checkpoint_name}"
        if outside.exists() and not overwrite:
            raise FileExistsError(f"{outside} exists; pass --overwrite to replace it")
    steps = (["load checkpoint"] + ([f"compress ({recipe.name})"] if recipe else []) + ["export"]
             + (["tensorrt"] if target != "cpu" else []) + (["parity"] if run_parity else [])
             + ["manifest"])
    with BundleWriter(out, overwrite, inputs=[checkpoint]) as bundle, \
            tqdm(total=len(steps), desc="build", unit="step") as bar:
        def step(name):
            bar.set_postfix_str(name)

        step("load checkpoint")
        model = load_checkpoint(checkpoint, model_type)
        refusal = recipe and family_of(model.config).refusal(recipe.name)
        if refusal:
            raise ValueError(refusal)
        bar.update()
        compression = None
        if recipe:
            step(f"compress ({recipe.name})")
            model, checkpoint, compression = apply(model, recipe, checkpoint, bundle.root)
            bar.update()
        digest = model_digest(model)  # the weights exported: every ONNX file and engine names them
        step("export")
        with attention_form(attention):  # the family's pieces (compress/families): encoder, decoders, ...
            export_pieces(model, bundle.root)
        export_tensors(model, bundle.root)  # and its constants (SAM 2: tracking.safetensors)
        bar.update()
        tensorrt = None
        if target != "cpu":
            step("tensorrt")
            tensorrt = _tensorrt_into(bundle.path(TENSORRT_FOLDER), model, target, bundle.path(ENCODER_FILE),
                                      bundle.path(BATCH_DECODER_FILE), digest)
            bar.update()

        # Parity loads the checkpoint again beside the ONNX Runtime sessions: without this
        # copy of the weights, vit_h's build fits in less memory.
        config, parameters = model.config, parameter_count(model)
        samedge_nodes = has_hyper_linear(model) or bool(coded_tensors(model))
        del model
        # From the finished encoder.onnx, which it loads whole: after the model is gone (vit_h: 2.5 GB each).
        clients = None
        if with_clients:  # each family's client files (export/clients.py)
            clients = write_client_files(bundle.root, Path(out).name, config)
        # Each weight once per folder: the encoders share theirs, the decoders theirs (export/shared_weights.py).
        for folder in (bundle.root, bundle.path(TENSORRT_FOLDER)):
            if folder.is_dir():
                share_weights(sorted(folder.glob("*.onnx")))
        stamp_all(bundle.root, digest, preprocessing_of(config))  # every ONNX file: which model, which pixels
        # Hashed once: the parity step adds only reports, which are not pinned (vit_h: 2.5 GB twice).
        bundle.pin()
        checkpoint_sha256 = (bundle.files[checkpoint.name]["sha256"] if checkpoint.parent == bundle.root
                             else sha256_file(checkpoint))

        def write_manifest(report):
            bundle.write_manifest(_manifest(config, parameters, checkpoint, checkpoint_sha256, target, bundle.root,
                                            report, compression, tensorrt, model_type, samedge_nodes, clients,
                                            digest, attention))

        report = None
        if run_parity:
            step("parity")
            write_manifest(None)  # the manifest names the checkpoint: Session opens the bundle through it
            report = _parity_into(bundle.root, bundle.out, checkpoint, tensorrt)
            bar.update()
        step("manifest")
        if checkpoint_outside and checkpoint.parent == bundle.root:
            # Parity ran on it inside; the device bundle goes without it, and the manifest names it beside.
            os.replace(checkpoint, outside)
            bundle.files.pop(checkpoint.name)
            checkpoint = outside
        write_manifest(report)
        bar.update()
    return report


def _parity_into(work: Path, out: Path, checkpoint: Path, tensorrt: dict | None) -> dict:
    """Parity of the ONNX files (and of the engines, when built) against the checkpoint."""
    report = run_parity(work, checkpoint, show_progress=False, backend="onnxruntime")
    report["bundle"] = str(out)
    (work / PARITY_FILE).write_text(json.dumps(report, indent=2))
    if tensorrt and tensorrt["status"] == "built":
        engines = run_parity(work, checkpoint, Thresholds(FP16_MIN_IOU, FP16_MAX_RELATIVE_LOGIT_ERROR, FP16_MIN_IOU,
                                                           FP16_SCORE_MARGIN, FP16_SCORE_MARGIN),
                             show_progress=False, backend="tensorrt",
                             video=False)  # float32 thresholds; fp16 engines' tracking is unmeasured
        (work / GPU_PARITY_FILE).write_text(json.dumps(engines, indent=2))
        tensorrt["parity"] = {"passed": engines["passed"], **engines["worst"], "failed": failed_rows(engines)}
        report["passed"] = report["passed"] and engines["passed"]
    return report


def _tensorrt_into(folder: Path, model, target: str, encoder_onnx: Path, decoder_onnx: Path, digest: str) -> dict:
    """The bundle's tensorrt/ folder: ONNX files for TensorRT, build script, engines if we can."""
    plugin = has_hyper_linear(model)
    export_tensorrt_inputs(model, folder, encoder_onnx=encoder_onnx, decoder_onnx=decoder_onnx)
    stamp_all(folder, digest, preprocessing_of(model.config))  # before engines: their record names the model
    low_res_size = model.config.low_res_size
    prepare_folder(folder, target, plugin, low_res_size)
    entry = {"folder": TENSORRT_FOLDER, "build_script": f"{TENSORRT_FOLDER}/{BUILD_SCRIPT}",
             "precision": {"encoder": "fp16 (LayerNorm, softmax, LayerNorm2d in fp32)", "decoder": "fp32"},
             "hyper_linear_plugin": plugin, "max_points": MAX_POINTS, "max_prompts": MAX_PROMPTS}
    if tensorrt_version() is None:
        entry["status"] = "pending"
        entry["todo"] = (f"build the engines on the {target} that will run them: bash {TENSORRT_FOLDER}/{BUILD_SCRIPT} "
                         "(needs CUDA, CMake and TensorRT >= 10.3); then runtime.Session(bundle) uses them")
    else:
        entry["status"] = "built"
        entry["engines"] = build_engines(folder, target, plugin, low_res_size)
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=(*TARGETS, "triton"), default="cpu",
                        help="triton: a cpu bundle served as a Triton model repository (export/triton.py)")
    parser.add_argument("--checkpoint", type=Path, help="default: the bundled demo model")
    parser.add_argument("--model-type", choices=model_types(),
                        help="architecture of a .pth checkpoint (checked against its shapes); needed when the "
                             "file cannot say, e.g. a state dict of the demo model")
    parser.add_argument("--seeded-weights", action="store_true",
                        help="with --model-type: that architecture with seeded random weights (no download; "
                             "for trying the pipeline, not for real masks)")
    parser.add_argument("--out", type=Path, help="default: bundles/<model>-<target>")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument("--skip-parity", action="store_true", help="do not run the parity check")
    parser.add_argument("--no-clients", action="store_true",
                        help="leave out encoder_preprocess.onnx and config.yaml (AnyLabeling, samexporter): for a "
                             "device that only runs samedge")
    parser.add_argument("--checkpoint-outside", action="store_true",
                        help="with --compress: keep the compressed checkpoint (parity's reference) beside the bundle "
                             "as OUT.<name>, not in it")
    parser.add_argument("--compress", choices=COMPRESSIONS,
                        help="compress the model first (Birkhoff: HyperLinear nodes in the ONNX files)")
    parser.add_argument("--variant", choices=VARIANTS, default=VARIANTS[0],
                        help="Birkhoff codec variant (default: reference; see docs/birkhoff.md)")
    parser.add_argument("--images", type=Path, help="SlimSAM: folder of unlabelled images to distil on")
    parser.add_argument("--synthetic", type=int, help="SlimSAM: distil on N synthetic shape images (demo model)")
    defaults = SlimSettings()
    parser.add_argument("--attention", choices=ATTENTION_FORMS, default=PLAIN,
                        help="the encoders' and memory pieces' attention: plain ONNX ops (every runtime; OpenVINO "
                             "fuses them itself) or fused: one com.microsoft.MultiHeadAttention node each (ONNX "
                             "Runtime's attention kernel; OpenVINO reads it too). TensorRT files are always plain. "
                             "Which is faster: docs/benchmarks/cpu-attention.md")
    parser.add_argument("--slim-epochs", type=int, nargs=2, metavar=("STEP1", "STEP2"),
                        help="SlimSAM: distillation epochs of each step (default "
                             f"{defaults.epochs1} {defaults.epochs2}, the paper's)")
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
    try:
        recipe = _recipe(parser, args) if args.compress else None
    except (ValueError, OSError) as err:  # unreadable --images
        print(f"error: {err}", file=sys.stderr)
        return 2
    options = dict(checkpoint=args.checkpoint, model_type=args.model_type, run_parity=not args.skip_parity,
                   recipe=recipe, with_clients=not args.no_clients, attention=args.attention)
    try:
        if args.target == "triton":
            if args.checkpoint_outside:
                parser.error("--checkpoint-outside is for bundles; a Triton repository holds its bundle whole")
            report = build_repository(out, options, overwrite=args.overwrite)
            print(f"Triton model repository written to {out}: serve it with python -m runtime.serving.server {out}")
            if report is None:
                return 0
            print(summary(report))
            return 0 if report["passed"] else 1
        report = build_bundle(out, args.target, overwrite=args.overwrite, checkpoint_outside=args.checkpoint_outside,
                              **options)
    except (ValueError, FileExistsError) as err:  # CheckpointError, BundleError, TensorRTError included
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"bundle written to {out}: {size_summary(size_report(out))}")
    tensorrt = json.loads((out / MANIFEST).read_text()).get("tensorrt")
    if tensorrt and tensorrt["status"] == "pending":
        print(f"TensorRT engines: {tensorrt['todo']}")
    if report is not None:
        print(summary(report))
        return 0 if report["passed"] else 1
    return 0


def _recipe(parser, args) -> Recipe:
    """--compress and the options of its stages, as one Recipe."""
    recipe = parse_recipe(args.compress, args.variant)
    if not recipe.needs_images:
        return recipe
    if not (args.images or args.synthetic):
        parser.error(f"--compress {args.compress} needs --images DIR or --synthetic N")
    settings = SlimSettings()
    if args.slim_epochs:
        settings.epochs1, settings.epochs2 = args.slim_epochs
        settings.feature_epochs = max(1, settings.epochs1 // 2)
        settings.alpha_epochs = max(1, settings.epochs2 // 2)
    images = synthetic_images(args.synthetic) if args.synthetic else load_folder(args.images)
    return recipe.with_images(images, settings)


if __name__ == "__main__":
    sys.exit(main())
