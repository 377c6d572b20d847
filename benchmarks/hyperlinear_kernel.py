"""The fused HyperLinear kernel against dense cuBLAS (torch.matmul), on a GPU, and the page
docs/benchmarks/hyperlinear-kernel.md that holds every GPU figure of the kernel.

    python -m benchmarks.hyperlinear_kernel [--repeats 50] [--json F] [--no-page]
    python -m benchmarks.hyperlinear_kernel --page-from DIR      # scripts/gpu_check.sh's last step

For every Linear shape of vit_b's encoder and M in {1, 8, 64, 4096} tokens: median time of
the kernel (plugins/hyperlinear, built with nvcc for this GPU) and of torch.addmm (cuBLAS)
on the decoded dense weight plus bias, both at fp32 (TF32 off) and fp16, measured with CUDA
events, the two alternating in this one process. Each sample times `--inner` back-to-back
launches of pre-bound arguments, so what is measured is the GPU's time, not Python's.

Without --page-from, the page gets this benchmark only; with it, the page is assembled from
the JSON files scripts/gpu_check.sh writes into DIR (GPU, ptxas, tests, compute-sanitizer,
bit-exact, benchmark, demo model, steps), each section saying "not run" or "failed" where
that is what happened. Without a GPU nothing is measured or written, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "hyperlinear-kernel.md"
SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]
TOKENS = [1, 8, 64, 4096]
TITLE = "HyperLinear kernel on a GPU"
TARGETS = ("Targets (issue 5): max relative error vs the torch decode + matmul <= 1e-5 (fp32) and <= 2e-3 "
           "(fp16) on every shape; fused / cuBLAS <= 1.15 at M = 4096; fused below dense fp32 at M <= 64.")


def _time_pair(fused, dense, repeats: int, inner: int) -> tuple[float, float]:
    """Median ms per call of each, CUDA events around `inner` calls, the order alternating."""
    import torch

    for _ in range(3):
        fused(), dense()
    torch.cuda.synchronize()
    times = {id(fused): [], id(dense): []}
    for repeat in range(repeats):
        for fn in ((fused, dense) if repeat % 2 == 0 else (dense, fused)):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times[id(fn)].append(start.elapsed_time(end) / inner)
    return statistics.median(times[id(fused)]), statistics.median(times[id(dense)])


def measure(kernel, repeats: int = 50, inner: int = 10, shapes=SHAPES, tokens=TOKENS) -> list[dict]:
    import torch

    from plugins.hyperlinear.kernel_checks import random_layer

    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for in_features, out_features in shapes:
        layer = random_layer(in_features, out_features, seed=in_features + out_features)  # not moved: shared
        dense = layer.decoded_weight().cuda()
        bias = layer.bias.detach().cuda()
        for m in tokens:
            for dtype in (torch.float32, torch.float16):
                x = torch.randn(m, in_features, device="cuda", dtype=dtype)
                w, b = dense.to(dtype), bias.to(dtype)
                y = torch.empty(m, out_features, device="cuda", dtype=dtype)
                fused_fn = kernel.bind(x, layer)
                dense_fn = lambda: torch.addmm(b, x, w.T, out=y)  # noqa: E731  (what F.linear runs)
                fused, cublas = _time_pair(fused_fn, dense_fn, repeats, inner)
                rows.append({"in": in_features, "out": out_features, "m": m, "dtype": str(dtype)[6:],
                             "fused_ms": fused, "cublas_ms": cublas, "ratio": fused / cublas})
                print(f"{in_features} x {out_features} M={m} {str(dtype)[6:]}: fused {fused:.4f} ms, "
                      f"cuBLAS {cublas:.4f} ms, {fused / cublas:.2f}x", flush=True)
    return rows


# ---- the page ----------------------------------------------------------------------------------

def _load(directory: Path) -> dict:
    results = {}
    for path in sorted(Path(directory).glob("*.json")):
        try:
            results[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            results[path.stem] = {"status": "failed", "reason": f"unreadable {path.name}: {err}"}
    steps = Path(directory) / "steps.tsv"
    if steps.is_file():
        results["steps"] = [line.split("\t") for line in steps.read_text().splitlines() if line.strip()]
    junit = Path(directory) / "tests.xml"
    if junit.is_file():
        try:
            root = ET.parse(junit).getroot()
            suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
            counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors",
                                                                              "skipped")}
            counts["seconds"] = sum(float(s.get("time", 0)) for s in suites)
            counts["failed_names"] = [f"{case.get('classname', '')}::{case.get('name')}"
                                      for case in root.iter("testcase")
                                      if case.find("failure") is not None or case.find("error") is not None]
            results["tests"] = counts
        except ET.ParseError as err:
            results["tests"] = {"status": "failed", "reason": f"unreadable tests.xml: {err}"}
    return results


def _table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _missing(result, what: str, key: str, empty: str = "No result.") -> str | None:
    """A line for a section that has no figures (none, a failed step, or no `key`), or None when it has."""
    if result is None:
        return f"Not run ({what} wrote no result; see the step table)."
    if result.get("status") in ("not run", "failed") and result.get("reason"):
        return f"{result['status'].capitalize()}: {result['reason']}."
    return empty if result.get(key) in (None, [], {}) else None  # 0.0 is a figure, an empty list is not


def _build_section(results: dict) -> list[str]:
    build = results.get("build")
    lines = ["## Build: ptxas -v", ""]
    gap = _missing(build, "the build", "kernels", "No ptxas report.")
    if gap:
        return lines + [gap, ""]
    return lines + [_table(["arch", "kernel", "registers", "spill stores (B)", "spill loads (B)", "stack (B)",
                            "smem (B)"],
                           [[k["arch"], f"`{k['kernel']}`", k["registers"], k["spill_stores"], k["spill_loads"],
                             k["stack"], k["smem"]] for k in build["kernels"]]), ""]


def _tests_section(results: dict) -> list[str]:
    tests = results.get("tests")
    lines = ["## tests/test_hyperlinear_kernel.py", ""]
    gap = _missing(tests, "pytest", "tests")
    if gap:
        return lines + [gap, ""]
    passed = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
    failed = tests["failed_names"]
    return lines + [f"{passed} passed, {tests['failures']} failed, {tests['errors']} errors, {tests['skipped']} "
                    f"skipped in {tests['seconds']:.0f} s." +
                    (" Failed: " + ", ".join(f"`{n}`" for n in failed[:20]) if failed else ""), ""]


def _sanitizer_section(results: dict) -> list[str]:
    rows = []
    for tool in ("memcheck", "racecheck"):
        result = results.get(tool)
        if result is None:
            rows.append([tool, "not run (no result)", "-", "-", "-", "-"])
        else:
            status = result["status"] + (f": {result['reason']}" if result.get("reason") else "")
            rows.append([tool, status, result.get("errors", "-"), result.get("launches", "-"),
                         result.get("mismatches", "-"), result.get("seconds", "-")])
    return ["## compute-sanitizer (odd shapes: K, N in {17, 40, 33, 100}, M in {1, 37, 130}, every path)", "",
            _table(["tool", "status", "sanitizer errors", "launches", "output mismatches", "seconds"], rows), ""]


def _bitexact_section(results: dict) -> list[str]:
    exact = results.get("bitexact")
    lines = ["## Bit-exact: X = identity, no bias, stored row scales", ""]
    gap = _missing(exact, "the bit-exact check", "rows")
    if gap:
        return lines + [gap, ""]
    lines += [f"Y must equal the CPU-decoded weight transposed bit for bit (fp32) and its half rounding "
              f"(fp16, every path); the host decode is the kernel's decode compiled for the CPU. "
              f"{exact['cases'] - exact['failed']} of {exact['cases']} cases equal.", ""]
    by_layer = {}
    for row in exact["rows"]:
        by_layer.setdefault((row["variant"], f"{row['in']} x {row['out']}"), []).append(row)
    columns = [(r["dtype"], str(r["path"])) for r in next(iter(by_layer.values()))]
    return lines + [_table(["variant", "K x N"] + [f"{d} {p}".replace(" -", "") for d, p in columns],
                           [[variant, shape] + ["equal" if r["equal"] else f"{r['mismatches']} differ" for r in rs]
                            for (variant, shape), rs in by_layer.items()]), ""]


def _bench_section(results: dict) -> list[str]:
    bench = results.get("bench")
    lines = ["## Kernel vs dense cuBLAS (vit_b Linear shapes)", ""]
    gap = _missing(bench, "the benchmark", "rows")
    if gap:
        return lines + [gap, ""]
    lines += [f"CUDA-event medians of {bench.get('repeats')} samples of {bench.get('inner')} back-to-back "
              "calls, fused and cuBLAS alternating; cuBLAS is torch.addmm on the decoded weight plus bias "
              "(TF32 off), the fused kernel decodes the codes in every call.", ""]
    return lines + [_table(["K x N", "M", "dtype", "fused ms", "cuBLAS ms", "fused / cuBLAS"],
                           [[f"{r['in']} x {r['out']}", r["m"], r["dtype"], f"{r['fused_ms']:.4f}",
                             f"{r['cublas_ms']:.4f}", f"{r['ratio']:.2f}"] for r in bench["rows"]]), ""]


def _demo_section(results: dict) -> list[str]:
    demo = results.get("demo")
    lines = ["## Demo model: fused kernel vs the HyperLinear torch forward (CUDA, fp32)", ""]
    gap = _missing(demo, "the demo check", "max_abs_logit_diff")
    if gap:
        return lines + [gap, ""]
    lines += [f"compress/weights/demo_sam.safetensors Birkhoff-compressed (reference codec, "
              f"{demo['hyperlinear_layers']} HyperLinear layers, {demo['swapped']} swapped, "
              f"{demo['fused_calls']} fused calls), {demo['images']} held-out images with one point "
              f"(3 masks) and one box (1 mask) each, logits at image resolution; status {demo['status']}.", ""]
    return lines + [_table(["masks", "max abs logit diff", "max abs logit", "max abs embedding diff",
                            "max abs IoU-score diff", "min mask IoU", "mean mask IoU"],
                           [[demo["masks"], f"{demo['max_abs_logit_diff']:.2e}", f"{demo['max_abs_logit']:.1f}",
                             f"{demo['max_abs_embedding_diff']:.2e}", f"{demo['max_abs_score_diff']:.2e}",
                             f"{demo['min_mask_iou']:.5f}", f"{demo['mean_mask_iou']:.5f}"]]), ""]


SECTIONS = {"build": _build_section, "tests": _tests_section, "sanitizer": _sanitizer_section,
            "bitexact": _bitexact_section, "bench": _bench_section, "demo": _demo_section}


def render(results: dict, command: str, sections=tuple(SECTIONS)) -> tuple[str, str, str]:
    """(title, intro, body) of the page from the results gpu_check.sh (or this module) collected;
    `sections` are the ones shown, each saying "not run" or "failed" where it has no figures."""
    info = results.get("info") or {}
    intro = (f"Measured {datetime.date.today().isoformat()} with `{command}` on {info.get('gpu', '?')} "
             f"(compute capability {info.get('capability', '?')}, {info.get('sms', '?')} SMs), torch "
             f"{info.get('torch', '?')} (CUDA {info.get('torch_cuda', '?')}), driver {info.get('driver') or '?'}, "
             f"{info.get('nvcc_version') or 'nvcc ?'}; the kernel built for "
             f"{', '.join('sm_' + a for a in info.get('kernel_archs', [])) or '?'} (SASS + PTX). {TARGETS}")
    parts = []
    if results.get("steps"):
        parts += ["## Steps (scripts/gpu_check.sh)", "",
                  _table(["step", "status", "seconds"], [row[:3] for row in results["steps"]]), ""]
    for name in sections:
        try:
            parts += SECTIONS[name](results)
        except (KeyError, TypeError, ValueError, StopIteration) as err:  # a malformed result: say so, go on
            parts += [f"## {name}", "", f"Result unreadable ({type(err).__name__}: {err}).", ""]
    return TITLE, intro, "\n".join(parts).rstrip() + "\n"


def not_measured_page() -> str:
    """The page as it stands until a GPU has run scripts/gpu_check.sh."""
    return f"""# {TITLE}: not measured: no GPU

No GPU has run `bash scripts/gpu_check.sh` yet, so this page has no figures: the kernel has
been compiled (CI: sm_87 and sm_90; also sm_80 with `-Xptxas -v`, no spills) but never run,
and `tests/test_hyperlinear_kernel.py`'s numerical cases skip. Without a CUDA GPU the script
exits with status 2 and leaves this page as it is.

On a machine with one GPU, PyTorch and nvcc (TensorRT is not needed) the script, in under
10 minutes, rewrites this page with: the GPU, torch and compute capability; ptxas's
registers and spills per kernel for that capability; the kernel tests; compute-sanitizer
memcheck and racecheck on odd shapes (K, N in {{17, 40, 33, 100}}, M in {{1, 37, 130}}); the
bit-exact check (X = identity: Y equals the CPU-decoded weight, and its half rounding in the
fp16 paths); the kernel against dense cuBLAS fp16/fp32 for the vit_b shapes at M in
{{1, 8, 64, 4096}} (`python -m benchmarks.hyperlinear_kernel` alone measures just that); and
the demo model run with the fused kernel against the HyperLinear CUDA forward (max logit
difference, mask IoU).

{TARGETS} What to look at first: docs/design.md (plugins/).
"""


def write(results: dict, command: str, path: Path = DOCS, sections=tuple(SECTIONS)) -> None:
    title, intro, body = render(results, command, sections)
    try:
        from .report import write_page  # imports export.build (onnx): not on every GPU machine
    except ImportError:
        print(body)
        page = "\n".join([f"# {title}", "", intro, "", body, ""])
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        partial.write_text(page)
        os.replace(partial, path)
        print(f"written to {path}")
        return
    write_page(path, title, intro, body)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--inner", type=int, default=10, help="back-to-back calls per timed sample")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--no-page", action="store_true", help="do not write docs/benchmarks/hyperlinear-kernel.md")
    parser.add_argument("--page-from", type=Path, help="assemble the page from gpu_check.sh's results folder")
    parser.add_argument("--page", type=Path, default=DOCS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.page_from is not None:
        results = _load(args.page_from)
        if not results.get("info"):
            print(f"{args.page_from}: no info.json (no GPU ran the checks); the page is left as it is",
                  file=sys.stderr)
            return 2
        write(results, "bash scripts/gpu_check.sh", args.page)
        return 0
    try:
        import torch
    except ImportError:
        print("torch is not importable: this benchmark needs PyTorch with CUDA", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("no CUDA GPU here: this benchmark needs one (nothing measured, the page is left as it is)",
              file=sys.stderr)
        return 2
    from plugins.hyperlinear import harness
    from plugins.hyperlinear.kernel_checks import info

    kernel = harness.Kernel(harness.cached_library())
    bench = {"status": "passed", "repeats": args.repeats, "inner": args.inner,
             "rows": measure(kernel, args.repeats, args.inner)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(bench, indent=2))
    if not args.no_page:
        write({"info": info(), "bench": bench},
              f"python -m benchmarks.hyperlinear_kernel --repeats {args.repeats} --inner {args.inner}", args.page,
              sections=("bench",))
    return 0


if __name__ == "__main__":
    sys.exit(main())
