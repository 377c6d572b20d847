"""Segment one image with a bundle and save a mask overlay.

    python -m runtime.predict BUNDLE IMAGE --point 320,240 [--point 100,80,0] [--box x0,y0,x1,y1] --out overlay.png

A point is X,Y (foreground) or X,Y,LABEL with LABEL 1 (foreground) or 0 (background).
BUNDLE may also be a bundle's encoder_preprocess.onnx (the encoder AnyLabeling and
samexporter run). Those clients assume 1024-px models; for a bundle of another size (the
256-px demo model) this command and runtime.Session are the way to run it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import OutputError, atomic_write, check_output_file
from .backends import registry
from .images import load_image
from .overlay import draw_overlay
from .session import Session


def _numbers(text: str, count: tuple[int, ...], what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} {text!r} is not comma-separated numbers") from None
    if len(values) not in count:
        raise argparse.ArgumentTypeError(f"{what} {text!r} needs {' or '.join(map(str, count))} numbers")
    return values


def image_format(path: Path) -> str:
    """Pillow's format for the file name's suffix (.png, .jpg, .webp, ...), or an error."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise OutputError(f"--out {path}: {path.suffix or 'no suffix'} is not an image format Pillow can write; "
                          "end the name with .png or .jpg")
    return fmt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("image", type=Path)
    parser.add_argument("--point", action="append", default=[],
                        type=lambda t: _numbers(t, (2, 3), "point"), help="X,Y or X,Y,LABEL")
    parser.add_argument("--box", type=lambda t: _numbers(t, (4,), "box"), help="x0,y0,x1,y1")
    parser.add_argument("--single-mask", action="store_true", help="one mask instead of the best of three")
    parser.add_argument("--backend", choices=registry.choices(), default="auto",
                        help="auto: TensorRT engines when built and tensorrt is installed, else the faster CPU "
                             "engine for the bundle's kind (printed)")
    parser.add_argument("--out", type=Path, default=Path("overlay.png"),
                        help="the overlay picture; its suffix names the format (.png, .jpg, ...)")
    args = parser.parse_args(argv)
    points = [p[:2] for p in args.point] or None
    labels = [p[2] if len(p) == 3 else 1 for p in args.point] or None  # checked by Session
    try:
        fmt = image_format(check_output_file(args.out))
        image = load_image(args.image)
        with Session(args.bundle, backend=args.backend) as session:
            print(f"backend: {session.backend.name} ({session.backend_choice.reason})")
            masks, scores, _ = session.predict(image, points=points, labels=labels, box=args.box,
                                               multimask_output=not args.single_mask)
    except (ValueError, RuntimeError) as err:  # ImageError, PromptError, BundleError
        print(f"error: {err}", file=sys.stderr)
        return 2
    best = int(np.argmax(scores))
    picture = draw_overlay(image, masks[best], points, labels, args.box,
                           caption=f"score {scores[best]:.3f}, {int(masks[best].sum())} px")
    atomic_write(args.out, lambda tmp: picture.save(tmp, format=fmt))
    print(f"mask {best} of {len(scores)} (score {scores[best]:.3f}, {int(masks[best].sum())} px) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
