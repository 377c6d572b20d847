"""The fused HyperLinear kernel against dense cuBLAS (torch.matmul), on a GPU.

    python -m benchmarks.hyperlinear_kernel [--repeats 50]

For every Linear shape of vit_b's encoder and M in {1, 8, 64, 4096} tokens: median time of
the kernel (plugins/hyperlinear, built with nvcc for this GPU) and of torch.matmul + bias
on the decoded dense weight, both at fp32 and fp16, measured with CUDA events in
alternation in this one process. Writes docs/benchmarks/hyperlinear-kernel.md. Without a
GPU it says so and exits with status 2.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
from pathlib import Path

from .report import write_page

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "hyperlinear-kernel.md"
SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]
TOKENS = [1, 8, 64, 4096]


def _time(fn, repeats: int) -> float:
    import torch

    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main(argv=None) -> int:
    import numpy as np
    import torch

    from compress.birkhoff import codec
    from compress.birkhoff.hyper_linear import HyperLinear
    from plugins.hyperlinear import harness

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU here: this benchmark needs one", file=sys.stderr)
        return 2
    major, minor = torch.cuda.get_device_capability()
    with tempfile.TemporaryDirectory() as work:
        kernel = harness.Kernel(harness.build(Path(work) / "libhyperlinear.so", archs=(f"{major}{minor}",)))
        rows = []
        for in_features, out_features in SHAPES:
            weight = np.random.default_rng(0).normal(0, 0.02, (out_features, in_features))
            layer = HyperLinear.from_encoded(codec.encode(weight, row_pairs=True), bias=torch.zeros(out_features))
            dense = layer.decoded_weight().cuda()
            bias = layer.bias.detach().cuda()
            for tokens in TOKENS:
                for dtype in (torch.float32, torch.float16):
                    x = torch.randn(tokens, in_features, device="cuda", dtype=dtype)
                    w, b = dense.to(dtype), bias.to(dtype)
                    fused_fn = lambda: kernel(x, layer)  # noqa: E731
                    dense_fn = lambda: torch.addmm(b, x, w.T)  # noqa: E731
                    fused_fn(), dense_fn()  # warm-up
                    fused = _time(fused_fn, args.repeats)
                    cublas = _time(dense_fn, args.repeats)
                    rows.append((in_features, out_features, tokens, str(dtype).split(".")[1], fused, cublas))
    lines = ["| K x N | M | dtype | fused ms | cuBLAS ms | fused / cuBLAS |", "|---|---|---|---|---|---|"]
    lines += [f"| {k} x {n} | {m} | {d} | {f:.4f} | {c:.4f} | {f / c:.2f} |" for k, n, m, d, f, c in rows]
    write_page(DOCS, "HyperLinear kernel vs cuBLAS",
               f"Measured {datetime.date.today()} with `python -m benchmarks.hyperlinear_kernel --repeats "
               f"{args.repeats}` on {torch.cuda.get_device_name()}; CUDA-event medians.", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
