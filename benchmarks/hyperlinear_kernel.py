"""The HyperLinear kernel's two paths against dense cuBLAS (torch.addmm), on a GPU, and the page
docs/benchmarks/hyperlinear-kernel.md that holds every GPU figure of the kernel.

    python -m benchmarks.run hyperlinear-kernel [--repeats 50] [--json F] [--no-page]
    python -m benchmarks.run hyperlinear-kernel --page-from DIR      # scripts/gpu_check.sh's last step

For every Linear shape of vit_b's encoder and M in {1, 64, 4096, 16384} tokens, fp16: median
time of the fused kernel (decode inside the GEMM, its own row tile), of the large-M path
forced (W decoded into the workspace, then cuBLASLt) and of torch.addmm (cuBLAS) on the
decoded dense weight plus bias, side by side; the plugin's threshold between the first two
(kGemmMinRows) is to be set where they cross. fp32 (TF32 off, the fused kernel only) at
M in {1, 64}. Measured with CUDA events, the variants alternating in this one process; each
sample times `--inner` back-to-back launches of pre-bound arguments, so what is measured is
the GPU's time, not Python's.

Without --page-from, the page gets this benchmark only; with it, the page is assembled from
the JSON files scripts/gpu_check.sh writes into DIR (GPU, ptxas, tests, compute-sanitizer,
bit-exact, benchmark, demo model, steps), each section saying "not run" or "failed" where
that is what happened. Without a GPU nothing is measured or written, and the exit status is 2.
Neither onnx nor export is imported: a GPU machine with torch need not have them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from plugins.hyperlinear import harness
from plugins.hyperlinear.kernel_checks import info, random_layer

from .report import DOCS, Page, Unmeasurable, table

DOCS_PAGE = DOCS / "hyperlinear-kernel.md"
SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]
TOKENS = [1, 64, 4096, 16384]
FP32_TOKENS = [1, 64]  # fp32 has the fused kernel alone; its question is small M
TITLE = "HyperLinear kernel on a GPU"
TARGETS = ("Targets (issues 5, 13): max relative error vs the torch decode + matmul <= 1e-5 (fp32) and <= 2e-3 "
           "(fp16) on every shape and path; decode + cuBLASLt / cuBLAS <= 1.15 at M >= 4096; fused below dense at "
           "M <= 64; the threshold between the fused and the cuBLASLt path where their times cross.")


def _time_many(calls: dict, repeats: int, inner: int) -> dict:
    """Median ms per call of each, CUDA events around `inner` calls, the order rotating each repeat
    (GPU time: latency.interleaved's wall clock would time Python's launches)."""
    for _ in range(3):
        for call in calls.values():
            call()
    torch.cuda.synchronize()
    names = list(calls)
    times = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                calls[name]()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end) / inner)
    return {name: statistics.median(values) for name, values in times.items()}


def measure_kernel(kernel, repeats: int = 50, inner: int = 10, shapes=SHAPES, tokens=TOKENS,
                   fp32_tokens=FP32_TOKENS) -> list[dict]:
    torch.backends.cuda.matmul.allow_tf32 = False
    rows = []
    for in_features, out_features in shapes:
        layer = random_layer(in_features, out_features, seed=in_features + out_features)  # not moved: shared
        dense = layer.decoded_weight().cuda()
        bias = layer.bias.detach().cuda()
        for dtype, counts in ((torch.float16, tokens), (torch.float32, fp32_tokens)):
            w, b = dense.to(dtype), bias.to(dtype)
            for m in counts:
                x = torch.randn(m, in_features, device="cuda", dtype=dtype)
                y = torch.empty(m, out_features, device="cuda", dtype=dtype)
                calls = {"fused": kernel.bind(x, layer, fused_only=True),
                         "dense": lambda x=x, w=w, b=b, y=y: torch.addmm(b, x, w.T, out=y)}  # what F.linear runs
                if dtype == torch.float16:
                    calls["gemm"] = kernel.bind(x, layer, path=harness.PATH_GEMM)
                medians = _time_many(calls, repeats, inner)
                row = {"in": in_features, "out": out_features, "m": m, "dtype": str(dtype)[6:],
                       "fused_ms": medians["fused"], "cublas_ms": medians["dense"],
                       "ratio": medians["fused"] / medians["dense"]}
                row["auto"] = "decode + cuBLASLt" if "gemm" in calls and m >= kernel.gemm_min_rows else "fused"
                if "gemm" in medians:
                    row.update(lt_ms=medians["gemm"], lt_ratio=medians["gemm"] / medians["dense"])
                rows.append(row)
                lt = f", decode + cuBLASLt {row['lt_ms']:.4f} ms" if "lt_ms" in row else ""
                print(f"{in_features} x {out_features} M={m} {row['dtype']}: fused {row['fused_ms']:.4f} ms{lt}, "
                      f"cuBLAS {row['cublas_ms']:.4f} ms, fused / cuBLAS {row['ratio']:.2f}", flush=True)
                del x, y, calls
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


def _missing(result, what: str, key: str, empty: str) -> str | None:
    """A line for a section that has no figures (none, a failed step, or no `key`), or None when it has."""
    if result is None:
        return f"Not run ({what} wrote no result; see the step table)."
    if result.get("status") in ("not run", "failed") and result.get("reason"):
        return f"{result['status'].capitalize()}: {result['reason']}."
    return empty if result.get(key) in (None, [], {}) else None  # 0.0 is a figure, an empty list is not


def _section(heading: str, result, what: str, key: str, figures, empty: str = "No result.") -> list[str]:
    """`## heading`, then figures(result) (lines), or the line that says why there are none."""
    gap = _missing(result, what, key, empty)
    return [f"## {heading}", "", *([gap] if gap else figures(result)), ""]


def _build_section(results: dict) -> list[str]:
    return _section("Build: ptxas -v", results.get("build"), "the build", "kernels", lambda build: [
        table(["arch", "kernel", "registers", "spill stores (B)", "spill loads (B)", "stack (B)", "smem (B)"],
              [[k["arch"], f"`{k['kernel']}`", k["registers"], k["spill_stores"], k["spill_loads"], k["stack"],
                k["smem"]] for k in build["kernels"]])], "No ptxas report.")


def _tests_line(tests: dict) -> list[str]:
    passed = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
    failed = tests["failed_names"]
    return [f"{passed} passed, {tests['failures']} failed, {tests['errors']} errors, {tests['skipped']} skipped in "
            f"{tests['seconds']:.0f} s." + (" Failed: " + ", ".join(f"`{n}`" for n in failed[:20]) if failed else "")]


def _tests_section(results: dict) -> list[str]:
    return _section("tests/test_hyperlinear_kernel.py", results.get("tests"), "pytest", "tests", _tests_line)


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
            table(["tool", "status", "sanitizer errors", "launches", "output mismatches", "seconds"], rows), ""]


def _bitexact_lines(exact: dict) -> list[str]:
    by_layer = {}
    for row in exact["rows"]:
        by_layer.setdefault((row["variant"], f"{row['in']} x {row['out']}"), []).append(row)
    columns = [(r["dtype"], str(r["path"])) for r in next(iter(by_layer.values()))]
    return [f"Y must equal the CPU-decoded weight transposed bit for bit (fp32) and its half rounding (fp16, every "
            f"path); the host decode is the kernel's decode compiled for the CPU. {exact['cases'] - exact['failed']} "
            f"of {exact['cases']} cases equal.", "",
            table(["variant", "K x N"] + [f"{d} {p}".replace(" -", "") for d, p in columns],
                  [[variant, shape] + ["equal" if r["equal"] else f"{r['mismatches']} differ" for r in rs]
                   for (variant, shape), rs in by_layer.items()])]


def _bitexact_section(results: dict) -> list[str]:
    return _section("Bit-exact: X = identity, no bias, stored row scales", results.get("bitexact"),
                    "the bit-exact check", "rows", _bitexact_lines)


def _bench_lines(bench: dict) -> list[str]:
    threshold = bench.get("gemm_min_rows")
    return [f"CUDA-event medians of {bench.get('repeats')} samples of {bench.get('inner')} back-to-back calls, "
            "the variants alternating; cuBLAS is torch.addmm on the decoded weight plus bias (TF32 off). Fused: "
            "the fused kernel (its own row tile), decoding the codes in every call; decode + cuBLASLt: the large-M "
            "path forced, W decoded into the workspace in every call, then cuBLASLt (fp16 only); auto: the path "
            "the plugin takes at that M" + (f" (decode + cuBLASLt from M = {threshold})." if threshold else "."), "",
            table(["K x N", "M", "dtype", "fused ms", "cuBLAS ms", "fused / cuBLAS", "decode + cuBLASLt ms",
                   "(decode + cuBLASLt) / cuBLAS", "auto"],
                  [[f"{r['in']} x {r['out']}", r["m"], r["dtype"], f"{r['fused_ms']:.4f}", f"{r['cublas_ms']:.4f}",
                    f"{r['ratio']:.2f}", f"{r['lt_ms']:.4f}" if "lt_ms" in r else "-",
                    f"{r['lt_ratio']:.2f}" if "lt_ratio" in r else "-", r.get("auto", "-")]
                   for r in bench["rows"]])]


def _bench_section(results: dict) -> list[str]:
    return _section("Kernel paths vs dense cuBLAS (vit_b Linear shapes)", results.get("bench"), "the benchmark",
                    "rows", _bench_lines)


def _demo_lines(demo: dict) -> list[str]:
    return [f"compress/weights/demo_sam.safetensors Birkhoff-compressed (reference codec, "
            f"{demo['hyperlinear_layers']} HyperLinear layers, {demo['swapped']} swapped, {demo['fused_calls']} "
            f"fused calls), {demo['images']} held-out images with one point (3 masks) and one box (1 mask) each, "
            f"logits at image resolution; status {demo['status']}.", "",
            table(["masks", "max abs logit diff", "max abs logit", "max abs embedding diff", "max abs IoU-score diff",
                   "min mask IoU", "mean mask IoU"],
                  [[demo["masks"], f"{demo['max_abs_logit_diff']:.2e}", f"{demo['max_abs_logit']:.1f}",
                    f"{demo['max_abs_embedding_diff']:.2e}", f"{demo['max_abs_score_diff']:.2e}",
                    f"{demo['min_mask_iou']:.5f}", f"{demo['mean_mask_iou']:.5f}"]])]


def _demo_section(results: dict) -> list[str]:
    return _section("Demo model: fused kernel vs the HyperLinear torch forward (CUDA, fp32)", results.get("demo"),
                    "the demo check", "max_abs_logit_diff", _demo_lines)


SECTIONS = {"build": _build_section, "tests": _tests_section, "sanitizer": _sanitizer_section,
            "bitexact": _bitexact_section, "bench": _bench_section, "demo": _demo_section}


def gpu_description(gpu: dict) -> str:
    """The GPU machine in words, from kernel_checks.info()'s record."""
    return (f"{gpu.get('gpu', '?')} (compute capability {gpu.get('capability', '?')}, {gpu.get('sms', '?')} "
            f"SMs), torch {gpu.get('torch', '?')} (CUDA {gpu.get('torch_cuda', '?')}), driver "
            f"{gpu.get('driver') or '?'}, {gpu.get('nvcc_version') or 'nvcc ?'}; the kernel built for "
            f"{', '.join('sm_' + a for a in gpu.get('kernel_archs', [])) or '?'} (SASS + PTX)")


def page(results: dict, path: Path, sections=tuple(SECTIONS), command: str | None = None) -> Page:
    """The page from the results gpu_check.sh (or this module) collected; `sections` are the ones
    shown, each saying "not run" or "failed" where it has no figures."""
    parts = []
    if results.get("steps"):
        parts += ["## Steps (scripts/gpu_check.sh)", "",
                  table(["step", "status", "seconds"], [row[:3] for row in results["steps"]]), ""]
    for name in sections:
        try:
            parts += SECTIONS[name](results)
        except (KeyError, TypeError, ValueError, StopIteration) as err:  # a malformed result: say so, go on
            parts += [f"## {name}", "", f"Result unreadable ({type(err).__name__}: {err}).", ""]
    return Page(path, TITLE, TARGETS, "\n".join(parts), machine=gpu_description(results.get("info") or {}),
                command=command)


def add_arguments(parser) -> None:
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--inner", type=int, default=10, help="back-to-back calls per timed sample")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--no-page", action="store_true", help="do not write docs/benchmarks/hyperlinear-kernel.md")
    parser.add_argument("--page-from", type=Path, help="assemble the page from gpu_check.sh's results folder")
    parser.add_argument("--page", type=Path, default=DOCS_PAGE, help=argparse.SUPPRESS)


def measure(args) -> Page | None:
    if args.page_from is not None:
        results = _load(args.page_from)
        if not results.get("info"):
            raise Unmeasurable(f"{args.page_from}: no info.json (no GPU ran the checks); the page is left as it is")
        return page(results, args.page, command="bash scripts/gpu_check.sh")
    if not torch.cuda.is_available():
        raise Unmeasurable("no CUDA GPU here: this benchmark needs one (nothing measured, the page is left as it is)")
    kernel = harness.Kernel(harness.cached_library())
    bench = {"status": "passed", "repeats": args.repeats, "inner": args.inner, "gemm_min_rows": kernel.gemm_min_rows,
             "rows": measure_kernel(kernel, args.repeats, args.inner)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(bench, indent=2))  # gpu_check.sh's results folder, not a page
    return None if args.no_page else page({"info": info(), "bench": bench}, args.page, sections=("bench",))
