"""README's tracking picture: a SAM 2 bundle tracks three objects (two clicks, a box, a mask) through the
synthetic clip video parity runs on; four frames side by side, each object tinted in its own colour.

    .venv/bin/python scripts/tracking_picture.py BUNDLE docs/results/tracking-overlay.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from compress.demo.clips import moving_shapes
from runtime.atomic import atomic_write
from runtime.mask_overlay import TINT, mask_colour
from runtime.video import VideoPredictor
from runtime.video_parity import default_script

SHOWN = (0, 6, 12, 17)
SCALE = 2  # the clip is 128 x 96: twice as large to be seen


def tinted(image: np.ndarray, masks) -> Image.Image:
    """Each object's mask tinted in its colour, no outline: an untrained model's masks are speckled, and
    outlines around every speck would hide the frame."""
    picture = image.astype(np.float32)
    for index, mask in enumerate(masks):
        picture[mask] = (1 - TINT) * picture[mask] + TINT * mask_colour(index)
    return Image.fromarray(picture.round().astype(np.uint8))


def main(bundle: str, out: str) -> None:
    frames = moving_shapes(18, 96, 128)
    masks = {}
    with VideoPredictor(bundle, backend="onnxruntime") as predictor:
        state = predictor.init_state(frames)
        for kind, frame, obj, *prompt in default_script(18, 96, 128)[:3]:  # the prompts of the parity script
            if kind == "points":
                predictor.add_new_points_or_box(state, frame, obj, points=prompt[0], labels=prompt[1])
            elif kind == "box":
                predictor.add_new_points_or_box(state, frame, obj, box=prompt[0])
            else:
                predictor.add_new_mask(state, frame, obj, prompt[0])
        for frame, _, logits in predictor.propagate_in_video(state):
            masks[frame] = logits[:, 0] > 0
    tiles = [np.asarray(tinted(frames[t], masks[t]).resize((128 * SCALE, 96 * SCALE), Image.NEAREST))
             for t in SHOWN]
    gap = np.full((96 * SCALE, 4, 3), 255, np.uint8)
    strip = np.concatenate([part for tile in tiles for part in (tile, gap)][:-1], axis=1)
    atomic_write(Path(out), lambda tmp: Image.fromarray(strip).save(tmp, format="PNG"))


if __name__ == "__main__":
    main(*sys.argv[1:3])
