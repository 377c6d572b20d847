"""How long a full SlimSAM-50 run on SAM-B takes: one training step of each step, timed.

    python -m benchmarks.run slimsam-step-time [--repeats 3]

Builds the step-1 student (embed 384, q/k/v 768, MLP 3072) and the final student
(384 / 384 / 1536) of vit_b with seeded weights (the widths are what matters for time),
and times one distillation step of each at 1024 px, batch 1, on this machine: teacher
forward(s) without gradients, student forward, loss with the feature taps, backward.
The paper's schedule is 10k images, 40 epochs of step 1 and 80 of step 2. Next to the
measurement, an extrapolation to a GPU from the models' MACs (labelled as such). Writes
docs/benchmarks/slimsam-step-time.md.
"""

from __future__ import annotations

import statistics

import torch

from compress import build_sam, get_config
from compress.slimsam.attention import split_attention
from compress.slimsam.distill import step1_loss, step2_loss

from .latency import interleaved
from .model_size import encoder_counts
from .report import DOCS, Page, table

IMAGES, EPOCHS1, EPOCHS2 = 10_000, 40, 80
GPU_FLOPS = 20e12  # assumed sustained fp32 rate of an H100-class GPU, about a third of its peak


def add_arguments(parser) -> None:
    parser.add_argument("--repeats", type=int, default=3)


def configs() -> dict:
    base = get_config("vit_b")
    return {"teacher": base,
            "step 1": base.replace(name="s1", encoder_embed_dim=384, encoder_attn_dims=(768,) * 12,
                                   encoder_mlp_dims=(3072,) * 12),
            "step 2": base.replace(name="s2", encoder_embed_dim=384, encoder_mlp_dims=(1536,) * 12)}


def _encoder(config, seed):
    encoder = build_sam(config, seed=seed).image_encoder
    split_attention(encoder)
    return encoder


def step_seconds(repeats: int) -> dict[str, float]:
    """Median seconds of one training step (forward, loss, backward) of each step's student."""
    shapes = configs()
    teacher = _encoder(shapes["teacher"], 0).eval()
    step1, final = _encoder(shapes["step 1"], 1), _encoder(shapes["step 2"], 2)
    for p in teacher.parameters():
        p.requires_grad_(False)
    image = torch.randn(1, 3, 1024, 1024)

    def training_step(student, loss_fn):
        def run():
            loss, _ = loss_fn(student, image, 0)
            loss.backward()
            student.zero_grad(set_to_none=True)
        return run

    runs = interleaved({"step 1": training_step(step1, step1_loss(teacher, feature_epochs=1)),
                        "step 2": training_step(final, step2_loss(teacher, step1.eval(), alpha_epochs=2))}, repeats)
    return {name: statistics.median(times) for name, times in runs.items()}


def gpu_estimate(cpu_hours: float) -> str:
    """The paper's schedule on a GPU, from the encoders' MACs (meta device: nothing is run)."""
    macs = {name: encoder_counts(config)["macs_all"] for name, config in configs().items()}
    # A backward pass costs about twice its forward; teachers run forward only, without gradients.
    step1 = 2 * (macs["teacher"] + 3 * macs["step 1"])
    step2 = 2 * (macs["teacher"] + macs["step 1"] + 3 * macs["step 2"])
    mean = (EPOCHS1 * step1 + EPOCHS2 * step2) / (EPOCHS1 + EPOCHS2)
    hours = IMAGES * (EPOCHS1 + EPOCHS2) * mean / GPU_FLOPS / 3600
    return (f"GPU estimate (an extrapolation, not a measurement): one image-step moves about {mean / 1e12:.1f} "
            f"TFLOP (step 1: teacher forward {macs['teacher'] / 1e9:.0f}G MACs + a step-1 student of "
            f"{macs['step 1'] / 1e9:.0f}G MACs forward, three times that with backward; step 2: teacher + step-1 "
            f"model + final student {macs['step 2'] / 1e9:.0f}G x 3). At an assumed {GPU_FLOPS / 1e12:.0f} TFLOPS "
            f"sustained in fp32 on an H100-class GPU (about a third of its fp32 peak), that is about "
            f"{mean / GPU_FLOPS:.2f} s per image-step, so {IMAGES // 1000}k images x ({EPOCHS1} + {EPOCHS2}) epochs "
            f"take about {hours:.0f} GPU-hours; the CPU figure above measures this machine only "
            f"({cpu_hours:.0f} hours).")


def measure(args) -> Page:
    times = step_seconds(args.repeats)
    hours = {name: IMAGES * epochs * times[name] / 3600 for name, epochs in (("step 1", EPOCHS1), ("step 2", EPOCHS2))}
    total = sum(hours.values())
    body = table(["step", "median s per image (batch 1, 1024 px)", "images x epochs", "hours on this machine"], [
        ["step 1 (bottleneck aligning, teacher + student)", f"{times['step 1']:.1f}", f"{IMAGES} x {EPOCHS1}",
         f"{hours['step 1']:.0f}"],
        ["step 2 (embedding aligning, teacher + step-1 model + student)", f"{times['step 2']:.1f}",
         f"{IMAGES} x {EPOCHS2}", f"{hours['step 2']:.0f}"],
        ["total", "", "", f"{total:.0f}"]])
    intro = (f"{torch.get_num_threads()} threads, median of {args.repeats} interleaved steps after a warm-up. "
             "This is CPU time measured here; no GPU was available to this work, so GPU hours are not measured "
             "(the estimate below the table is an extrapolation, labelled as such).")
    return Page(DOCS / "slimsam-step-time.md", "SlimSAM-50 on SAM-B: step time and the cost of the paper's schedule",
                intro, body + "\n\n" + gpu_estimate(total))
