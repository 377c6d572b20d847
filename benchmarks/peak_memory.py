"""Peak resident memory of a runtime.Session holding a bundle, in a fresh process.

    python -m benchmarks.peak_memory BUNDLE [--backend onnxruntime] [--photo astronaut]
    python -m benchmarks.peak_memory --floor      # the same imports, no model opened

The child opens the Session, runs set_image on a photograph and one point prompt, and
prints its peak resident set: the whole process's (interpreter, numpy, onnxruntime and
the model), nothing subtracted. `--floor` gives what the imports alone take, for reading
the figures. The peak is /proc/self/status's VmHWM, which starts afresh at exec; Linux
carries getrusage's ru_maxrss over from the forked parent (this benchmark, several GB
after building vit_b), so ru_maxrss is used only where /proc is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from skimage import data

from runtime import Session
from runtime.backends import registry

from .report import REPO, proc_field


def peak_bytes() -> int:
    peak = proc_field("/proc/self/status", "VmHWM")  # "123456 kB"
    if peak is not None:
        return int(peak.split()[0]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def child(bundle: Path | None, backend: str, photo: str) -> int:
    registry.backend_class(backend)  # imports the backend's library: part of the floor, not of the model

    image = getattr(data, photo)()  # loaded before the model, so it is in the floor too
    if bundle is not None:
        # The CPU provider even where CUDA exists: the figure is the host memory of a CPU deployment.
        providers = ["CPUExecutionProvider"] if "providers" in registry.backend_class(backend).takes_options else None
        session = Session(bundle, backend=backend, providers=providers)
        session.set_image(image)
        session.predict(points=[[image.shape[1] / 2, image.shape[0] / 2]], labels=[1])
    return peak_bytes()


def in_fresh_process(module: str, arguments: list[str], env: dict | None = None) -> dict:
    """The JSON a `python -m module arguments` child prints last: a process whose peak is its own.
    `env`: variables set for the child, beside this process's."""
    result = subprocess.run([sys.executable, "-m", module, *arguments], cwd=REPO, capture_output=True, text=True,
                            env=None if env is None else {**os.environ, **env})
    if result.returncode != 0:
        raise RuntimeError(f"{module} child failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(bundle: Path | None, backend: str = "onnxruntime", photo: str = "astronaut", env: dict | None = None) -> int:
    """Peak RSS in bytes of a fresh process doing the above (bundle None: the floor)."""
    arguments = ["--backend", backend, "--photo", photo] + (["--floor"] if bundle is None else [str(bundle)])
    return in_fresh_process("benchmarks.peak_memory", arguments, env)["peak_rss_bytes"]


def measure_all(bundles: dict[str, Path], workers: int = 2) -> dict[str, int]:
    """measure() for several bundles, two children at a time: each child's peak is its own."""
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(bundles, pool.map(measure, bundles.values())))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", nargs="?", type=Path)
    parser.add_argument("--backend", default="onnxruntime", choices=registry.names())
    parser.add_argument("--photo", default="astronaut")
    parser.add_argument("--floor", action="store_true", help="imports and photo only, no model")
    args = parser.parse_args(argv)
    if (args.bundle is None) != args.floor:
        parser.error("give a BUNDLE or --floor")
    print(json.dumps({"peak_rss_bytes": child(args.bundle, args.backend, args.photo)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
