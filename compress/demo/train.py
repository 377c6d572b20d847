"""Train the bundled demonstration SAM on synthetic shapes (seeded, resumable).

    python -m compress.demo.train --out compress/weights/demo_sam.safetensors

Every step draws its own images from seed (seed, step), so a resumed run sees exactly
the data an uninterrupted one would. Each image is encoded once and decoded for
several prompts at a time, the way SAM's decoder is meant to be used.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..architectures import build_sam
from runtime.atomic import atomic_write

from ..checkpoint import save_checkpoint
from .shapes import interior_point, make_sample, mask_box

PROMPTS_PER_IMAGE = 2  # of each kind: two point prompts and two box prompts per image


def _prompts_for_image(sample, rng, use_box: bool):
    """Targets [K,H,W] and prompt tensors for up to K shapes of one image."""
    order = rng.permutation(len(sample.masks))
    chosen = [sample.masks[i] for i in np.resize(order, PROMPTS_PER_IMAGE)]
    targets = torch.from_numpy(np.stack(chosen)).float()
    if use_box:
        boxes = []
        for mask in chosen:
            box = mask_box(mask)
            side = np.array([box[2] - box[0], box[3] - box[1]] * 2)
            boxes.append(box + rng.normal(0.0, 0.05, 4) * side)  # SAM-style box noise
        return targets, None, torch.tensor(np.stack(boxes), dtype=torch.float32)
    coords = torch.tensor(np.stack([interior_point(m, rng) for m in chosen]))[:, None, :]
    labels = torch.ones(len(chosen), 1, dtype=torch.int64)
    return targets, (coords, labels), None


def mask_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE + Dice per mask. logits [K,M,H,W], targets [K,1,H,W] -> [K,M]."""
    targets = targets.expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean((2, 3))
    probs = logits.sigmoid()
    inter = (probs * targets).sum((2, 3))
    dice = 1 - (2 * inter + 1) / (probs.sum((2, 3)) + targets.sum((2, 3)) + 1)
    return bce + dice


def prompt_loss(model, embedding, image_pe, targets, points, boxes):
    """Loss of one image's prompts, and the IoU of the mask SAM would answer with.

    embedding [1, C, h, w]; targets [K, H, W]; points or boxes for the K prompts.
    """
    size = model.image_encoder.img_size
    sparse, dense = model.prompt_encoder(points=points, boxes=boxes, masks=None)
    low_res, iou_pred = model.mask_decoder.predict_masks(embedding, image_pe, sparse, dense)  # [K,4,h',w'], [K,4]
    logits = F.interpolate(low_res, (size, size), mode="bilinear", align_corners=False)
    per_mask = mask_losses(logits, targets[:, None])  # [K, 4]
    with torch.no_grad():
        hard, truth = logits > 0, targets[:, None].bool()
        iou = (hard & truth).sum((2, 3)) / (hard | truth).sum((2, 3)).clamp(min=1)
    # Mask 0 answers single-mask requests; masks 1..3 share the ambiguity (best one trained).
    loss = (per_mask[:, 0] + per_mask[:, 1:].min(dim=1).values).mean() + F.mse_loss(iou_pred, iou.float())
    # Boxes are answered with the single mask, points with the best-scoring of three.
    answer = torch.zeros_like(iou_pred[:, 0], dtype=torch.long) if boxes is not None else iou_pred[:, 1:].argmax(1) + 1
    return loss, iou.gather(1, answer[:, None])[:, 0]


def training_step(model, batch_rng: np.random.Generator, batch_size: int):
    """Loss and batch mIoU of one step; images and prompts come from `batch_rng`."""
    samples = [make_sample(batch_rng) for _ in range(batch_size)]
    images = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float()
    embeddings = model.image_encoder(model.preprocess(images))  # [B, C, h, w]
    image_pe = model.prompt_encoder.get_dense_pe()
    losses, ious = [], []
    for index, sample in enumerate(samples):
        for use_box in (False, True):
            targets, points, boxes = _prompts_for_image(sample, batch_rng, use_box)
            loss, iou = prompt_loss(model, embeddings[index : index + 1], image_pe, targets, points, boxes)
            losses.append(loss)
            ious.append(iou)
    return torch.stack(losses).mean(), torch.cat(ious).mean().item()


def learning_rate(step: int, steps: int, peak: float, warmup: int = 50) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))


def _save_state(path: Path, model, optimizer, step: int):
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def train(out: Path, steps: int, batch_size: int, lr: float, seed: int, state_path: Path, threads: int):
    torch.set_num_threads(threads)
    model = build_sam("demo", seed=seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    start = 0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        print(f"resuming from step {start} ({state_path})")
    torch.manual_seed(seed + start)
    began = time.time()
    progress = tqdm(range(start, steps), initial=start, total=steps, desc="demo model")
    running = None
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        loss, miou = training_step(model, np.random.default_rng([seed, step]), batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        running = miou if running is None else 0.95 * running + 0.05 * miou
        progress.set_postfix(loss=f"{loss.item():.3f}", miou=f"{running:.3f}")
        if (step + 1) % 100 == 0 or step + 1 == steps:
            _save_state(state_path, model, optimizer, step + 1)
    model.eval()
    save_checkpoint(model, out, extra_metadata={
        "training": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                     "script": "python -m compress.demo.train"},
    })
    print(f"wrote {out} after {time.time() - began:.0f} s of training in this run")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("compress/weights/demo_sam.safetensors"))
    parser.add_argument("--steps", type=int, default=2800)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--state", type=Path, default=Path(".cache/demo-train-state.pt"),
                        help="resumable training state; rerun the same command to resume")
    args = parser.parse_args(argv)
    train(args.out, args.steps, args.batch_size, args.lr, args.seed, args.state, args.threads)


if __name__ == "__main__":
    main()
