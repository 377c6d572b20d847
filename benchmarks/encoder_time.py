"""Image-encoder time: ONNX Runtime (the bundle) vs PyTorch eager, side by side.

    python -m benchmarks.encoder_time [--model-type vit_b] [--repeats 5]

Both run in this one process on the same input, alternating, after one warm-up each,
so machine noise hits both alike. Writes docs/benchmarks/encoder-time.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "encoder-time.md"


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(model_type: str, repeats: int, threads: int) -> dict:
    import onnxruntime as ort
    import torch

    from compress import build_sam
    from export import export_encoder

    torch.set_num_threads(threads)
    model = build_sam(model_type, seed=0)
    size = model.image_encoder.img_size
    pixels = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    with tempfile.TemporaryDirectory() as work:
        path = export_encoder(model, Path(work) / "encoder.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        tensor = torch.from_numpy(pixels)

        def run_torch():
            with torch.no_grad():
                model.image_encoder(tensor)

        def run_ort():
            session.run(None, {"image": pixels})

        run_torch(), run_ort()  # warm-up
        torch_times, ort_times = [], []
        for _ in range(repeats):
            torch_times.append(_time(run_torch))
            ort_times.append(_time(run_ort))
    return {
        "model": model_type, "repeats": repeats, "threads": threads,
        "torch_s": statistics.median(torch_times), "ort_s": statistics.median(ort_times),
        "torch_all": torch_times, "ort_all": ort_times,
    }


def table(result: dict) -> str:
    ratio = result["ort_s"] / result["torch_s"]
    return "\n".join([
        "| backend | median s | runs (s) | vs torch |",
        "|---|---|---|---|",
        f"| PyTorch eager (CPU) | {result['torch_s']:.2f} | {', '.join(f'{t:.2f}' for t in result['torch_all'])} | 1.00x |",
        f"| ONNX Runtime (CPU) | {result['ort_s']:.2f} | {', '.join(f'{t:.2f}' for t in result['ort_all'])} | {ratio:.2f}x |",
    ])


def main(argv=None) -> int:
    import onnxruntime
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    result = measure(args.model_type, args.repeats, args.threads)
    text = table(result)
    print(text)
    command = f"python -m benchmarks.encoder_time --model-type {args.model_type} --repeats {args.repeats}"
    page = "\n".join([
        f"# Image-encoder time: {args.model_type}, ONNX Runtime vs PyTorch",
        "",
        f"Measured {datetime.date.today().isoformat()} by `{command}`: one 1x3xSxS input, seeded random "
        f"weights, {args.threads} threads each, alternating runs after one warm-up, median of {args.repeats}.",
        f"Machine: {platform.processor() or platform.machine()}, {platform.system()}; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}.",
        "",
        text,
        "",
    ])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
