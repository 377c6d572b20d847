"""How well each variant still segments.

- Against ground truth: compress.demo.evaluate's point and box mIoU on the held-out
  synthetic shapes (only meaningful for a trained model: the bundled demo model).
- Agreement: mean IoU of a variant's masks with the uncompressed model's masks on
  runtime.parity's photographs and prompts. With seeded random weights (vit_b here)
  there is no ground truth to be right about, but this says how closely a compressed
  model reproduces the function of the one it came from.

runtime.parity.compare compares a Session with a torch model; agreement's reference is
the original bundle's ONNX Runtime Session, already open for the latency runs (a torch
vit_b would add half a minute per photograph), so it asks both Sessions the same prompts
here and scores them with parity's mask IoU.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from compress.demo.evaluate import evaluate
from runtime.parity import mask_iou, prompt_cases, standard_images


def photographs(names) -> dict[str, np.ndarray]:
    """The named photographs of runtime.parity's standard images, in the order asked."""
    images = standard_images()
    unknown = [name for name in names if name not in images]
    if unknown:
        raise ValueError(f"{unknown} are not among runtime.parity's standard images {list(images)}")
    return {name: images[name] for name in names}


def ground_truth(bundle, count: int) -> dict:
    """{'point_miou', 'box_miou'} on the first `count` held-out synthetic images."""
    metrics = evaluate(bundle, count, show_progress=False)
    return {"point_miou": metrics["point_miou"], "box_miou": metrics["box_miou"], "count": count}


def agreement_prompts(height: int, width: int) -> list[dict]:
    """runtime.parity's prompt cases without the one that feeds back a previous mask
    (each model would be fed its own, which mixes two questions)."""
    return [case for case in prompt_cases(height, width) if not case.get("mask_from_previous")]


def _answers(session, image: np.ndarray) -> list[np.ndarray]:
    session.set_image(image)
    return [session.predict(points=case.get("points"), labels=case.get("labels"), box=case.get("box"),
                            multimask_output=case.get("multimask_output", True)).masks
            for case in agreement_prompts(*image.shape[:2])]


def agreement(reference, candidates: dict, images: dict[str, np.ndarray]) -> dict[str, dict]:
    """{name: {'miou', 'masks'}}: IoU of every candidate mask with the reference's mask of the
    same prompt and index, averaged. `reference` and `candidates` are runtime.Session-like."""
    ious = {name: [] for name in candidates}
    with tqdm(total=len(images) * (len(candidates) + 1), desc="agreement", unit="encode", leave=False) as bar:
        for image in images.values():
            expected = _answers(reference, image)
            bar.update()
            for name, session in candidates.items():
                for ours, theirs in zip(_answers(session, image), expected):
                    ious[name] += [mask_iou(a, b) for a, b in zip(ours, theirs)]
                bar.update()
    return {name: {"miou": float(np.mean(values)), "masks": len(values)} for name, values in ious.items()}
