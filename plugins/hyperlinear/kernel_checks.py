"""Checks of the HyperLinear kernel that are programs rather than tests (scripts/gpu_check.sh).

    python -m plugins.hyperlinear.kernel_checks info     [--json F]
    python -m plugins.hyperlinear.kernel_checks sanitize --tool memcheck|racecheck [--json F] [--timeout S]
    python -m plugins.hyperlinear.kernel_checks workload [--library L]
    python -m plugins.hyperlinear.kernel_checks bitexact [--json F]
    python -m plugins.hyperlinear.kernel_checks demo     [--json F] [--count N]

* info: the GPU, its compute capability, torch, nvcc, the driver, the archs the kernel is built for.
* sanitize: runs `workload` under compute-sanitizer (memcheck or racecheck) and fails on any
  error it reports. `workload` is the program it runs: every kernel path on odd shapes (K, N in
  {17, 40, 33, 100}, M in {1, 37, 130}, bias and none; the decode + cuBLASLt path included),
  outputs compared with the torch decode + matmul, guard zones around Y checked, M = 0,
  refused parameters and damaged codes (indices past the table). It makes no torch kernel
  launch (tensors are made on the CPU and copied), so the sanitizer only instruments the
  HyperLinear kernels (and cuBLASLt's, on that path), and it runs with
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 so every tensor is its own allocation and memcheck sees
  an access past any of them.
* bitexact: X = identity (M = K), no bias, the stored row scales: Y must equal the CPU-decoded
  weight transposed, bit for bit in float32, and its half rounding in every float16 path
  (decode + cuBLASLt included).
* demo: the bundled demo model, Birkhoff-compressed, on CUDA with the HyperLinear torch
  forward and with the fused kernel (torch_op.use_fused_kernel), the same images and prompts:
  max |logit difference| and mask IoU.

Exit status: 0 passed, 1 failed, 2 no CUDA GPU, 3 not run (a tool or a package is missing).
`random_layer` (encoded layers cached in memory and, with $SAMEDGE_LAYER_CACHE, on disk)
is shared with tests/test_hyperlinear_kernel.py and benchmarks/hyperlinear_kernel.py.

torch, compress and segment_anything are imported inside each program, not at the top: each
program runs with what the GPU machine has and reports a package it lacks (exit 3).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

from .harness import FP16_PATHS, PATH_GEMM

REPO = Path(__file__).resolve().parent.parent.parent
DEMO_CHECKPOINT = REPO / "compress" / "weights" / "demo_sam.safetensors"
ODD_FEATURES = (17, 40, 33, 100)
ODD_ROWS = (1, 37, 130)
VIT_B_SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)]  # (in, out) of every vit_b Linear
BITEXACT_SHAPES = VIT_B_SHAPES + [(17, 40), (33, 100), (192, 576)]
PASSED, FAILED, NO_GPU, NOT_RUN = 0, 1, 2, 3
GUARD = 64  # elements of sentinel on each side of Y in the sanitizer workload


# ---- encoded layers, encoded once ------------------------------------------------------------

@lru_cache(maxsize=None)
def random_layer(in_features: int, out_features: int, seed: int, variant: str = "reference", bias: bool = True):
    """A HyperLinear of t-distributed weights (tails, so the outer rings are in use) encoded
    with the reference codec or the scaled variant; cached per (shape, seed, variant, bias) in
    this process and, where $SAMEDGE_LAYER_CACHE names a folder, on disk across processes.
    Callers must not modify the layer."""
    import numpy as np
    import torch

    from compress.birkhoff import codec, scaled
    from compress.birkhoff.hyper_linear import HyperLinear

    cache = os.environ.get("SAMEDGE_LAYER_CACHE")
    path = None
    if cache:
        # "stream": the bit-stream layout (files of the earlier word layout are not read back).
        path = Path(cache) / (f"stream-{variant}-{in_features}x{out_features}-seed{seed}-"
                              f"{'bias' if bias else 'nobias'}.pt")
        if path.is_file():
            try:
                state = torch.load(path, weights_only=True)
                return HyperLinear(state["in_features"], state["out_features"], codebook_size=state["codebook_size"],
                                   index_bits=state["index_bits"], side=state["side"], center=state["center"],
                                   gains=state["gains"], codes=state["codes"], row_scale=state["row_scale"],
                                   bias=state["bias"])
            except Exception as err:  # a damaged cache file: encode again
                print(f"layer cache {path} unreadable ({err}); encoding again", file=sys.stderr)
    rng = np.random.default_rng(seed)
    weight = rng.standard_t(4, (out_features, in_features)) * 0.03
    encode = {"reference": codec.encode, "scaled": scaled.encode}[variant]
    encoded = encode(weight, row_pairs=True)
    if encoded is None:
        raise ValueError(f"{variant} codec left a {out_features} x {in_features} weight raw (seed {seed})")
    bias_values = torch.from_numpy(rng.normal(0, 0.1, out_features)).float() if bias else None
    layer = HyperLinear.from_encoded(encoded, bias=bias_values)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        torch.save({"in_features": layer.in_features, "out_features": layer.out_features,
                    "codebook_size": layer.codebook_size, "index_bits": layer.index_bits, "side": layer.side,
                    "center": layer.center, "gains": layer.gains, "codes": layer.codes, "row_scale": layer.row_scale,
                    "bias": None if layer.bias is None else layer.bias.detach()}, partial)
        os.replace(partial, path)
    return layer


def damaged_codes(layer, seed: int = 0):
    """(int32 words, int64 indices) of the layer's codes with about a quarter of the indices
    moved past its pair table (up to 2^index_bits - 1, the largest the stream can hold), the
    last index of every row among them."""
    import numpy as np
    import torch

    from .reference import pack, unpack

    pairs = (layer.in_features + 1) // 2
    count = layer.out_features * pairs
    index = unpack(layer.codes.numpy(), count, layer.index_bits).reshape(layer.out_features, pairs)
    size = layer.table.shape[0]
    largest = (1 << layer.index_bits) - 1
    if largest < size:
        raise ValueError(f"{layer.index_bits}-bit indices cannot pass a {size}-pair table")
    rng = np.random.default_rng(seed)
    moved = np.where(rng.random(index.shape) < 0.25, rng.integers(size, largest + 1, index.shape), index)
    moved[:, -1] = largest
    return torch.from_numpy(pack(moved.reshape(-1), layer.index_bits)), torch.from_numpy(moved.reshape(-1))


def clamped_weight(layer, indices):
    """float32 [N, K] that the kernel's clamp gives for `indices` (int64 [N * pairs]): the
    reference table's last pair for every index past it, times the row scale."""
    import torch

    table = layer.table
    pairs = (layer.in_features + 1) // 2
    clamped = torch.clamp(indices, max=table.shape[0] - 1)
    weight = table[clamped].reshape(layer.out_features, 2 * pairs)[:, :layer.in_features]
    return weight * layer.row_scale[:, None]


def _kernel():
    from . import harness

    return harness.Kernel(harness.cached_library())


def _cuda_or_exit() -> bool:
    try:
        import torch
    except ImportError:
        print("torch is not importable: these checks need PyTorch with CUDA", file=sys.stderr)
        return False
    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: these checks need one", file=sys.stderr)
        return False
    return True


def _write_json(path, payload) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2, default=str))


# ---- info ----------------------------------------------------------------------------------

def _command_output(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def info() -> dict:
    import torch

    from . import harness

    props = torch.cuda.get_device_properties(0)
    major, minor = torch.cuda.get_device_capability(0)
    try:
        nvcc = harness.find_nvcc()
        lines = (_command_output([nvcc, "--version"]) or "").splitlines()
        nvcc_version = next((line for line in lines if "release" in line), lines[-1] if lines else None)
    except FileNotFoundError:
        nvcc, nvcc_version = None, None
    driver = _command_output(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return {"gpu": torch.cuda.get_device_name(0), "capability": f"{major}.{minor}",
            "sms": props.multi_processor_count, "memory_gib": round(props.total_memory / 2**30, 1),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda, "driver": driver,
            "nvcc": nvcc, "nvcc_version": nvcc_version, "kernel_archs": list(harness.kernel_archs()),
            "compute_sanitizer": find_sanitizer(), "python": sys.version.split()[0]}


# ---- compute-sanitizer ----------------------------------------------------------------------

def find_sanitizer() -> str | None:
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    candidates = [Path("/usr/local/cuda/bin/compute-sanitizer")]
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            candidates.append(Path(os.environ[variable]) / "bin" / "compute-sanitizer")
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent / "compute-sanitizer")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _launch_checked(kernel, dtype, x, layer_tensors, params, m, n, path, use_bias):
    """Launch on fresh Y storage with NaN guards; (status, Y [m, n] float64 or None, guards intact).
    The workspace, where the path may use one, is made on the CPU and copied (no torch kernel)."""
    import torch

    codes, table, row_scale, bias = layer_tensors
    storage = torch.full((m * n + 2 * GUARD,), float("nan"), dtype=dtype).cuda()
    y_ptr = storage.data_ptr() + GUARD * storage.element_size()
    gemm, workspace, workspace_bytes = None, None, 0
    if dtype == torch.float16 and path in (None, PATH_GEMM):
        rows = max(m, kernel.gemm_min_rows) if path is not None else m
        workspace_bytes = kernel.workspace_size(params, rows)
        if workspace_bytes:
            gemm, workspace = kernel.gemm(), torch.zeros(workspace_bytes, dtype=torch.uint8).cuda()
    status = kernel.launch(0 if dtype == torch.float32 else 1, None if x is None else x.data_ptr(),
                           codes.data_ptr(), table.data_ptr(), table.shape[0], row_scale.data_ptr(),
                           bias.data_ptr() if use_bias else None, y_ptr, m, params,
                           torch.cuda.current_stream().cuda_stream, path, gemm,
                           None if workspace is None else workspace.data_ptr(), workspace_bytes)
    torch.cuda.synchronize()
    out = storage.cpu()
    guards = bool(torch.isnan(out[:GUARD]).all() and torch.isnan(out[GUARD + m * n:]).all())
    y = out[GUARD:GUARD + m * n].view(m, n).double() if m > 0 else None
    return status, y, guards, out


def workload(library: Path | None) -> int:
    """Every path on odd shapes and the refusals, for compute-sanitizer; 0 when all outputs match."""
    import torch

    from . import harness

    kernel = harness.Kernel(library) if library else _kernel()
    failures, launches = [], 0

    def fail(message):
        failures.append(message)
        print("FAIL", message, flush=True)

    def on_gpu(layer, codes=None):
        """(codes, table, row_scale, bias) on the GPU, copied from the CPU (no torch kernel launch)."""
        table = kernel.pair_table(harness.params_for(layer))
        return ((layer.codes if codes is None else codes).contiguous().cuda(), table.cuda(),
                layer.row_scale.contiguous().cuda(), layer.bias.detach().contiguous().cuda())

    for in_features in ODD_FEATURES:
        for out_features in ODD_FEATURES:
            layer = random_layer(in_features, out_features, seed=1000 * in_features + out_features)
            weight = layer.decoded_weight().double()
            tensors = on_gpu(layer)
            params = harness.params_for(layer)
            for m in ODD_ROWS:
                x = torch.randn(m, in_features, generator=torch.Generator().manual_seed(m + in_features))
                use_bias = (in_features + out_features + m) % 2 == 0
                for dtype, paths, tolerance in ((torch.float32, (None,), 1e-5), (torch.float16, FP16_PATHS, 2e-3)):
                    xq = x.to(dtype)
                    expected = xq.double() @ weight.T + (layer.bias.detach().double() if use_bias else 0.0)
                    xd = xq.cuda()
                    for path in paths:
                        what = (f"K={in_features} N={out_features} M={m} {str(dtype)[6:]} path={path} "
                                f"bias={use_bias}")
                        status, y, guards, _ = _launch_checked(kernel, dtype, xd, tensors, params, m, out_features,
                                                               path, use_bias)
                        launches += 1
                        if status != 0:
                            fail(f"{what}: CUDA error {status}")
                            continue
                        if not guards:
                            fail(f"{what}: wrote outside Y")
                        if not torch.isfinite(y).all():
                            fail(f"{what}: non-finite or unwritten outputs")
                            continue
                        error = ((y - expected).abs().max() / expected.abs().max()).item()
                        if error > tolerance:
                            fail(f"{what}: relative error {error:.2e} > {tolerance:.0e}")
    # M = 0 with real pointers: success, nothing written; refused parameters: invalid value, nothing written.
    layer = random_layer(33, 40, seed=33040)
    tensors = on_gpu(layer)
    x = torch.randn(37, 33, generator=torch.Generator().manual_seed(5)).cuda()
    for dtype in (torch.float32, torch.float16):
        xd = x.to(dtype) if dtype == torch.float32 else x.cpu().half().cuda()
        status, _, _, out = _launch_checked(kernel, dtype, xd, tensors, harness.params_for(layer), 0, 40, None, True)
        if status != 0 or not torch.isnan(out).all():
            fail(f"M=0 {dtype}: status {status}, wrote {int((~torch.isnan(out)).sum())} values")
        for field, value in (("codebook_size", 0), ("codebook_size", -1), ("lattice_side", 0),
                             ("gain_count", 0), ("gain_count", 5), ("in_features", 0), ("index_bits", 0),
                             ("index_bits", 17)):
            params = harness.params_for(layer)
            setattr(params, field, value)
            status, _, _, out = _launch_checked(kernel, dtype, xd, tensors, params, 37, 40, None, True)
            if status != harness.CUDA_ERROR_INVALID_VALUE or not torch.isnan(out).all():
                fail(f"{field}={value} {dtype}: status {status} (want {harness.CUDA_ERROR_INVALID_VALUE})")
    # Indices past the table: clamped to its last pair, as the kernel's host decode says.
    words, indices = damaged_codes(layer)
    clamped = kernel.decode_host(layer, words).double()
    tensors = on_gpu(layer, words)
    for dtype, paths, tolerance in ((torch.float32, (None,), 1e-5), (torch.float16, FP16_PATHS, 2e-3)):
        xq = x.cpu().to(dtype)
        expected = xq.double() @ clamped.T + layer.bias.detach().double()
        for path in paths:
            status, y, guards, _ = _launch_checked(kernel, dtype, xq.cuda(), tensors, harness.params_for(layer),
                                                   37, 40, path, True)
            launches += 1
            if status != 0 or not guards or not torch.isfinite(y).all() or \
                    ((y - expected).abs().max() / expected.abs().max()).item() > tolerance:
                fail(f"damaged codes {dtype} path={path}: status {status}, guards {guards}")
    print(f"workload: {launches} launches, {len(failures)} failures", flush=True)
    return PASSED if not failures else FAILED


_SUMMARY = re.compile(r"ERROR SUMMARY:\s*(\d+) error")
_RACE = re.compile(r"RACECHECK SUMMARY:\s*(\d+) hazards? displayed \((\d+) errors?, (\d+) warnings?\)")


def sanitize(tool: str, timeout: float, log: Path | None) -> dict:
    """Run `workload` under compute-sanitizer --tool `tool`; {'status': passed|failed|not run, ...}."""
    from . import harness

    sanitizer = find_sanitizer()
    if sanitizer is None:
        return {"tool": tool, "status": "not run", "reason": "compute-sanitizer not found on PATH, in "
                "/usr/local/cuda/bin or next to nvcc"}
    library = harness.cached_library()  # built here, not under the sanitizer
    help_text = _command_output([sanitizer, "--help"]) or ""
    command = [sanitizer, "--tool", tool, "--error-exitcode", "17"]
    if "--print-limit" in help_text:
        command += ["--print-limit", "20"]
    # torch's own CUDA API calls can return errors on purpose (probing); the workload checks
    # every launch status itself, so the sanitizer is left to the kernels' memory and races.
    if "--report-api-errors" in help_text:
        command += ["--report-api-errors", "no"]
    command += [sys.executable, "-m", "plugins.hyperlinear.kernel_checks", "workload", "--library", str(library)]
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    print("$", " ".join(command), flush=True)
    began = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        timed_out = True
    seconds = time.perf_counter() - began
    print(output[-20000:], flush=True)
    if log:
        Path(log).write_text(output)
    summary = _SUMMARY.search(output)
    race = _RACE.search(output)
    workload_line = re.search(r"workload: (\d+) launches, (\d+) failures", output)
    errors = int(summary.group(1)) if summary else None
    if race:
        errors = max(errors or 0, int(race.group(2)))
    result = {"tool": tool, "sanitizer": sanitizer, "seconds": round(seconds, 1), "exit_code": process.returncode,
              "errors": errors, "race_warnings": int(race.group(3)) if race else None,
              "launches": int(workload_line.group(1)) if workload_line else None,
              "mismatches": int(workload_line.group(2)) if workload_line else None, "timed_out": timed_out}
    # --error-exitcode makes any sanitizer error a non-zero exit (and the workload exits 1 on a
    # mismatch), so the exit code decides; the summary lines are for the report.
    ok = (not timed_out and process.returncode == 0 and errors in (0, None) and workload_line is not None
          and result["mismatches"] == 0)
    result["status"] = "passed" if ok else "failed"
    if not ok:
        result["reason"] = ("timed out" if timed_out else f"exit {process.returncode}, {errors} sanitizer errors, "
                            f"{result['mismatches']} mismatches")
    return result


# ---- bit-exact -------------------------------------------------------------------------------

def bitexact_case(kernel, layer) -> list[dict]:
    """Y = kernel(identity) for every path against the CPU decode: one row per dtype/path."""
    import torch

    weight = layer.decoded_weight()  # CPU, float32: the reference
    eye = torch.eye(layer.in_features, device="cuda")
    rows = []
    host = kernel.decode_host(layer)
    rows.append({"dtype": "host decode", "path": "-", "equal": bool(torch.equal(host, weight)),
                 "mismatches": int((host != weight).sum())})
    for dtype, paths, expected in ((torch.float32, (None, 1), weight.T), (torch.float16, (None,) + FP16_PATHS,
                                                                            weight.half().T)):
        for path in paths:
            got = kernel(eye.to(dtype), layer, path=path).cpu()
            rows.append({"dtype": str(dtype)[6:], "path": "auto" if path is None else path,
                         "equal": bool(torch.equal(got, expected)), "mismatches": int((got != expected).sum()),
                         "max_abs_diff": float((got.double() - expected.double()).abs().max())})
    return rows


def bitexact() -> dict:
    kernel = _kernel()
    rows = []
    for variant in ("reference", "scaled"):
        for in_features, out_features in BITEXACT_SHAPES:
            layer = random_layer(in_features, out_features, seed=in_features + out_features, variant=variant,
                                 bias=False)
            for row in bitexact_case(kernel, layer):
                rows.append({"variant": variant, "in": in_features, "out": out_features, **row})
    failed = [r for r in rows if not r["equal"]]
    for row in rows:
        print(f"{row['variant']:9} {row['in']:5} x {row['out']:5} {row['dtype']:11} path {str(row['path']):4}: "
              f"{'equal' if row['equal'] else str(row['mismatches']) + ' mismatches'}")
    return {"status": "passed" if not failed else "failed", "cases": len(rows), "failed": len(failed), "rows": rows}


# ---- the demo model --------------------------------------------------------------------------

def demo(count: int) -> dict:
    import numpy as np
    import torch

    from compress.birkhoff.hyper_linear import HyperLinear
    from compress.birkhoff.model import compress_model
    from compress.checkpoint import load_checkpoint
    from compress.demo.shapes import held_out_cases
    from runtime.parity import mask_iou
    from segment_anything import SamPredictor

    from .torch_op import use_fused_kernel

    torch.backends.cuda.matmul.allow_tf32 = False  # both runs in true float32
    torch.backends.cudnn.allow_tf32 = False
    kernel = _kernel()
    began = time.perf_counter()
    model = compress_model(load_checkpoint(DEMO_CHECKPOINT), "reference", show_progress=False).model
    compress_seconds = time.perf_counter() - began
    model = model.cuda().eval()
    layers = sum(isinstance(m, HyperLinear) for m in model.modules())
    cases = held_out_cases(count)

    def run():
        predictor = SamPredictor(model)
        outputs = []
        with torch.inference_mode():
            for case in cases:
                predictor.set_image(case.image)
                features = predictor.features.detach().float().cpu().numpy()
                point, point_scores, _ = predictor.predict(point_coords=np.asarray(case.point[None], np.float32),
                                                           point_labels=np.array([1]), multimask_output=True,
                                                           return_logits=True)
                box, box_scores, _ = predictor.predict(box=np.asarray(case.box, np.float32), multimask_output=False,
                                                       return_logits=True)
                outputs.append({"features": features, "logits": np.concatenate([point, box]),
                                "scores": np.concatenate([point_scores, box_scores])})
        torch.cuda.synchronize()
        return outputs

    began = time.perf_counter()
    reference = run()
    reference_seconds = time.perf_counter() - began
    calls = [0]

    def counted(x, layer):
        calls[0] += 1
        return kernel(x, layer)

    swapped = use_fused_kernel(model, counted)
    began = time.perf_counter()
    fused = run()
    fused_seconds = time.perf_counter() - began
    logit_diff = max(float(np.abs(r["logits"] - f["logits"]).max()) for r, f in zip(reference, fused))
    logit_scale = max(float(np.abs(r["logits"]).max()) for r in reference)
    feature_diff = max(float(np.abs(r["features"] - f["features"]).max()) for r, f in zip(reference, fused))
    score_diff = max(float(np.abs(r["scores"] - f["scores"]).max()) for r, f in zip(reference, fused))
    ious = [mask_iou(rm > 0, fm > 0) for r, f in zip(reference, fused) for rm, fm in zip(r["logits"], f["logits"])]
    result = {"images": count, "masks": len(ious), "hyperlinear_layers": layers, "swapped": swapped,
              "fused_calls": calls[0], "max_abs_logit_diff": logit_diff, "max_abs_logit": logit_scale,
              "max_abs_embedding_diff": feature_diff, "max_abs_score_diff": score_diff,
              "min_mask_iou": min(ious), "mean_mask_iou": float(np.mean(ious)),
              "compress_seconds": round(compress_seconds, 1), "torch_forward_seconds": round(reference_seconds, 2),
              "fused_seconds": round(fused_seconds, 2)}
    # Both are float32 with the same decoded weights; only the GEMM's summation order differs.
    ok = swapped == layers > 0 and calls[0] > 0 and result["min_mask_iou"] >= 0.98 and \
        result["mean_mask_iou"] >= 0.999 and logit_diff <= 0.05
    result["status"] = "passed" if ok else "failed"
    print(json.dumps(result, indent=2))
    return result


# ---- command line ----------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("info", "sanitize", "workload", "bitexact", "demo"):
        command = sub.add_parser(name)
        command.add_argument("--json", type=Path, help="write the result as JSON here")
        if name == "sanitize":
            command.add_argument("--tool", choices=("memcheck", "racecheck"), required=True)
            command.add_argument("--timeout", type=float, default=240.0)
            command.add_argument("--log", type=Path, help="the sanitizer's full output")
        if name == "workload":
            command.add_argument("--library", type=Path)
        if name == "demo":
            command.add_argument("--count", type=int, default=16, help="held-out images (one point, one box each)")
    args = parser.parse_args(argv)
    if not _cuda_or_exit():
        _write_json(args.json, {"status": "not run", "reason": "no CUDA GPU"})
        return NO_GPU
    if args.command == "workload":
        return workload(args.library)
    if args.command == "info":
        result = info()
        print("\n".join(f"{key}: {value}" for key, value in result.items()))
        result["status"] = "passed"
    elif args.command == "sanitize":
        result = sanitize(args.tool, args.timeout, args.log)
        print(f"{args.tool}: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))
    elif args.command == "bitexact":
        result = bitexact()
    else:
        try:
            result = demo(args.count)
        except ImportError as err:
            result = {"status": "not run", "reason": f"a package is missing: {err}"}
            print(result["reason"], file=sys.stderr)
    _write_json(args.json, result)
    return {"passed": PASSED, "failed": FAILED, "not run": NOT_RUN}[result["status"]]


if __name__ == "__main__":
    sys.exit(main())
