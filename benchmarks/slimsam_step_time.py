"""How long a full SlimSAM-50 run on SAM-B takes: one training step of each step, timed.

    python -m benchmarks.slimsam_step_time [--repeats 3]

Builds the step-1 student (embed 384, q/k/v 768, MLP 3072) and the final student
(384 / 384 / 1536) of vit_b with seeded weights (the widths are what matters for time),
and times one distillation step of each at 1024 px, batch 1, on this machine: teacher
forward(s) without gradients, student forward, loss with the feature taps, backward.
The paper's schedule is 10k images, 40 epochs of step 1 and 80 of step 2. Writes
docs/benchmarks/slimsam-step-time.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path

import torch

from .report import write_page

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "slimsam-step-time.md"
IMAGES, EPOCHS1, EPOCHS2 = 10_000, 40, 80


def _encoder(config, seed):
    from compress import build_sam
    from compress.slimsam.attention import split_attention

    encoder = build_sam(config, seed=seed).image_encoder
    split_attention(encoder)
    return encoder


def main(argv=None) -> int:
    from compress import get_config
    from compress.slimsam.distill import step1_loss, step2_loss

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    base = get_config("vit_b")
    teacher = _encoder(base, 0).eval()
    step1 = _encoder(base.replace(name="s1", encoder_embed_dim=384, encoder_attn_dims=(768,) * 12,
                                  encoder_mlp_dims=(3072,) * 12), 1)
    final = _encoder(base.replace(name="s2", encoder_embed_dim=384, encoder_mlp_dims=(1536,) * 12), 2)
    for p in teacher.parameters():
        p.requires_grad_(False)
    image = torch.randn(1, 3, 1024, 1024)
    times = {}
    for name, student, loss_fn in (("step 1", step1, step1_loss(teacher, feature_epochs=1)),
                                   ("step 2", final, step2_loss(teacher, step1.eval(), alpha_epochs=2))):
        runs = []
        for _ in range(args.repeats + 1):  # the first is a warm-up
            began = time.perf_counter()
            loss, _ = loss_fn(student, image, 0)
            loss.backward()
            student.zero_grad(set_to_none=True)
            runs.append(time.perf_counter() - began)
        times[name] = statistics.median(runs[1:])
    cpu_hours = IMAGES * (EPOCHS1 * times["step 1"] + EPOCHS2 * times["step 2"]) / 3600
    lines = [
        "| step | median s per image (batch 1, 1024 px) | images x epochs | hours on this machine |",
        "|---|---|---|---|",
        f"| step 1 (bottleneck aligning, teacher + student) | {times['step 1']:.1f} | {IMAGES} x {EPOCHS1} "
        f"| {IMAGES * EPOCHS1 * times['step 1'] / 3600:.0f} |",
        f"| step 2 (embedding aligning, teacher + step-1 model + student) | {times['step 2']:.1f} | "
        f"{IMAGES} x {EPOCHS2} | {IMAGES * EPOCHS2 * times['step 2'] / 3600:.0f} |",
        f"| total | | | {cpu_hours:.0f} |",
    ]
    write_page(DOCS, "SlimSAM-50 on SAM-B: step time and the cost of the paper's schedule",
               f"Measured {datetime.date.today()} with `python -m benchmarks.slimsam_step_time --repeats "
               f"{args.repeats}` on {platform.machine()} ({torch.get_num_threads()} threads, no GPU), torch "
               f"{torch.__version__}. This is CPU time measured here; no GPU was available to this work, so GPU "
               "hours are not measured (docs/slimsam.md gives an extrapolation, labelled as such).",
               "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
