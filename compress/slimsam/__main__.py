"""SlimSAM: prune and distil a SAM image encoder with a folder of unlabelled images.

    python -m compress.slimsam --checkpoint sam_vit_b_01ec64.pth --images DIR --ratio 0.5 --out slim.safetensors
    python -m compress.slimsam --synthetic 300 --ratio 0.5 --out demo-slim50.safetensors   # the demo model
    python -m compress.slimsam ... --step 1 --out step1.safetensors                        # step 1 only
    python -m compress.slimsam ... --heads                                                 # step 2: fewer, whole heads
    python -m compress.slimsam --checkpoint ORIGINAL --step1 step1.safetensors --step 2 ... # step 2 only
    torchrun --nproc_per_node 4 -m compress.slimsam ...                                     # several GPUs

The teacher gives every target, so images need no labels. Work state (pruned models,
per-epoch training state, report.json) goes to --work; rerun with --resume to continue.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from runtime.atomic import atomic_write, check_output_file

from ..architectures import ARCHITECTURES
from ..checkpoint import load_checkpoint, save_checkpoint
from ..families import family_of
from ..checkpoint_file import CheckpointError
from ..demo import DEFAULT_CHECKPOINT
from .distill import distributed
from .images import load_folder, preprocess_images, synthetic_images
from .importance import IMPORTANCE_KINDS
from .pipeline import run_step1, run_step2, slim
from .prune import NORMALIZERS
from .settings import HEAD_DIMS, HEADS, SlimSettings, check_attention
from .targets import check_target_settings, target_for


def build_parser() -> argparse.ArgumentParser:
    defaults = SlimSettings()
    parser = argparse.ArgumentParser(prog="python -m compress.slimsam", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="the model to slim (default: the bundled demo model)")
    parser.add_argument("--model-type", choices=sorted(ARCHITECTURES),
                        help="architecture of a .pth checkpoint, when the file cannot say")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", type=Path, help="folder of unlabelled images")
    source.add_argument("--synthetic", type=int, help="use N synthetic shape images (for the demo model)")
    parser.add_argument("--val-count", type=int, default=8, help="images held out for the validation loss")
    parser.add_argument("--ratio", type=float, default=defaults.ratio, help="pruning ratio of each step (0.5, 0.77)")
    parser.add_argument("--step", choices=("1", "2", "both"), default="both")
    parser.add_argument("--step1", type=Path, help="with --step 2: the step-1 model")
    parser.add_argument("--importance", choices=IMPORTANCE_KINDS, default=defaults.importance)
    parser.add_argument("--importance-images", type=int, default=defaults.importance_images)
    parser.add_argument("--global-pruning", action="store_true", help="step 2 across layers (normalised scores)")
    parser.add_argument("--heads", action="store_true",
                        help="step 2 keeps ceil(heads x (1 - ratio)) whole heads at the head-dim recipe's q/k/v "
                             "width, instead of every head's same head dims (SAM 1 only; docs/slimsam.md)")
    parser.add_argument("--normalizer", choices=NORMALIZERS, default=defaults.step2_normalizer,
                        help="step-2 score normaliser")
    parser.add_argument("--epochs1", type=int, default=defaults.epochs1)
    parser.add_argument("--epochs2", type=int, default=defaults.epochs2)
    parser.add_argument("--feature-epochs", type=int, default=defaults.feature_epochs,
                        help="step 1: epochs with q/k/v + MLP terms")
    parser.add_argument("--alpha-epochs", type=int, default=defaults.alpha_epochs,
                        help="step 2: N in alpha = (N - n - 1)/N")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--accumulate", type=int, default=defaults.accumulate)
    parser.add_argument("--patience", type=int, default=defaults.patience)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--work", type=Path, help="work directory (default: <out>.work)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --work")
    parser.add_argument("--out", type=Path, required=True)
    return parser


# What a work directory's state depends on: a resumed run must not change any of them.
RUN_IDENTITY = ("checkpoint", "model_type", "images", "synthetic", "val_count", "step", "step1", "ratio",
                "importance", "importance_images", "global_pruning", "normalizer", "seed", "batch_size",
                "accumulate", "lr", "heads")
ADDED_LATER = {"heads": "False"}  # what a run recorded before the key existed ran with


def _check_same_run(work: Path, args) -> None:
    """Record the run's settings in work/run.json; on --resume, refuse different ones."""
    identity = {key: str(getattr(args, key)) for key in RUN_IDENTITY}
    record = work / "run.json"
    if record.is_file():
        earlier = json.loads(record.read_text())
        earlier = {**ADDED_LATER, **earlier}
        changed = [f"{key}: {earlier.get(key)} -> {value}" for key, value in identity.items()
                   if earlier.get(key) != value]
        if changed:
            raise ValueError(f"--resume with other settings than the run in {work} ({'; '.join(changed)}); "
                             "resume with the same ones, or start over with another --work")
        return
    work.mkdir(parents=True, exist_ok=True)
    atomic_write(record, lambda tmp: Path(tmp).write_text(json.dumps(identity, indent=2)))


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.ratio < 1:
        parser.error("--ratio must lie between 0 and 1")
    if args.step == "2" and (args.step1 is None or args.checkpoint is None):
        parser.error("--step 2 needs --step1 (the step-1 model) and --checkpoint (the original teacher)")
    attention = HEADS if args.heads else HEAD_DIMS
    try:
        check_attention(attention, args.global_pruning)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    work = args.work or args.out.with_name(args.out.name + ".work")
    # Under torchrun only rank 0 judges the work directory: other ranks may create it first.
    first_rank = int(os.environ.get("RANK", "0")) == 0
    if first_rank and work.exists() and not args.resume:
        print(f"error: {work} holds an earlier run; pass --resume to continue it or remove it", file=sys.stderr)
        return 2
    try:
        check_output_file(args.out)  # before hours of distillation, not after
        sam = load_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT, args.model_type)
        refusal = family_of(sam.config).refusal("slimsam-50-heads" if args.heads else "slimsam-50")
        if refusal:
            raise ValueError(refusal)
        settings = SlimSettings(
            ratio=args.ratio, importance=args.importance, importance_images=args.importance_images,
            global_pruning=args.global_pruning, step2_normalizer=args.normalizer, attention=attention,
            epochs1=args.epochs1, epochs2=args.epochs2, feature_epochs=args.feature_epochs,
            alpha_epochs=args.alpha_epochs, lr=args.lr, batch_size=args.batch_size, accumulate=args.accumulate,
            patience=args.patience, seed=args.seed)
        check_target_settings(target_for(sam), settings)  # SAM 2 takes no --heads: say so before any work
        arrays = synthetic_images(args.synthetic) if args.synthetic else load_folder(args.images)
        if len(arrays) <= args.val_count:
            raise ValueError(f"{len(arrays)} images leave none for training after {args.val_count} for validation")
        tensors = preprocess_images(arrays, sam.config)
        images, val_images = tensors[: -args.val_count], tensors[-args.val_count:]
        rank, _ = distributed()  # sets this rank's GPU under torchrun
        if rank == 0:
            _check_same_run(work, args)
        if torch.cuda.is_available():
            sam = sam.cuda()
            images, val_images = [t.cuda() for t in images], [t.cuda() for t in val_images]
        if args.step == "1":
            model = run_step1(sam, images, val_images, settings, work)
        elif args.step == "2":
            step1 = load_checkpoint(args.step1).to(images[0].device)
            model = run_step2(sam, step1, images, val_images, settings, work)
        else:
            model = slim(sam, images, val_images, settings, work)
    except (CheckpointError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if rank != 0:
        return 0
    save_checkpoint(model.cpu(), args.out, extra_metadata={
        "slimsam": {"ratio": args.ratio, "importance": args.importance, "step": args.step,
                    "attention": attention,
                    "images": len(images), "source": str(args.checkpoint or DEFAULT_CHECKPOINT)}})
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {target_for(model).describe(model)}, {params / 1e6:.2f}M parameters; "
          f"work state in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
