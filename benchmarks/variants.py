"""The variants the results page compares, and how each becomes a bundle (cached on disk).

Every variant is built with the project's own entry points (export.build.build_bundle,
export.quantize.quantize_bundle), so the benchmark measures exactly what a user gets.
A built bundle and a small JSON record (compression wall time, when it was built) stay
in the work directory; a rerun reuses them instead of rebuilding.

Each build runs in its own child process (multiprocessing's "spawn": a fresh interpreter; fork
would copy torch's and OpenMP's thread pools, which are not fork-safe). The benchmark's process
keeps torch models, ONNX Runtime sessions and caches from the variants it has measured, and
building SlimSAM-77 of vit_b on top of them ran out of memory at 24 GB; a child returns all of
its memory when it exits. So a ModelSource must pickle: module-level functions or
functools.partial of them, no lambdas.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from compress.recipe import Recipe, parse_recipe
from export.build import build_bundle
from export.onnx_export import GRAPH_REVISION
from export.quantize import quantize_bundle
from runtime.atomic import atomic_write
from runtime.bundle import open_bundle

ORIGINAL = "original"
VARIANTS = (ORIGINAL, "birkhoff-reference", "birkhoff-scaled", "slimsam-50", "slimsam-77", "slimsam-77-heads",
            "slimsam-77+birkhoff", "int8", "int4")


@dataclass(frozen=True)
class Variant:
    recipe: Recipe | None = None  # what export.build compresses with (None: nothing)
    quantize: str | None = None  # an export.quantize method, applied to `base`'s bundle
    base: str | None = None  # the variant this one starts from (None: the original checkpoint)


DEFINITIONS = {
    ORIGINAL: Variant(),
    "birkhoff-reference": Variant(parse_recipe("birkhoff", "reference")),
    "birkhoff-scaled": Variant(parse_recipe("birkhoff", "scaled")),
    "slimsam-50": Variant(parse_recipe("slimsam-50")),
    "slimsam-77": Variant(parse_recipe("slimsam-77")),
    # Whole heads at SlimSAM-77's widths (vit_b: 3 heads x 56 instead of 12 x 14): fewer attention maps
    # on a CPU (docs/benchmarks/cpu-attention.md); here for its fidelity beside slimsam-77's.
    "slimsam-77-heads": Variant(parse_recipe("slimsam-77-heads")),
    # The two stages of `--compress slimsam-77+birkhoff`, run on slimsam-77's checkpoint so
    # that one pruning and distillation serves both rows.
    "slimsam-77+birkhoff": Variant(parse_recipe("birkhoff", "reference"), base="slimsam-77"),
    "int8": Variant(quantize="int8", base=ORIGINAL),
    "int4": Variant(quantize="int4", base=ORIGINAL),
}


def in_build_order(variants) -> tuple[str, ...]:
    """`variants` with each one's base before it (int8 starts from the original), none twice."""
    ordered: list[str] = []

    def add(variant):
        base = DEFINITIONS[variant].base
        if base:
            add(base)
        if variant not in ordered:
            ordered.append(variant)

    for variant in variants:
        add(variant)
    return tuple(ordered)


def uses_slimsam(variant: str) -> bool:
    definition = DEFINITIONS[variant]
    return ((definition.recipe is not None and definition.recipe.needs_images)
            or (definition.base is not None and uses_slimsam(definition.base)))


@dataclass
class ModelSource:
    """What every variant of one model is built from. It travels to the build's child process
    pickled: each callable a module-level function or a functools.partial of one, never a lambda."""

    key: str  # cache directory name: "demo", "vit_b", "tiny"
    checkpoint: Callable[[], Path]  # the original checkpoint (made on first call, e.g. seeded weights)
    slim_images: Callable[[], list]  # uint8 RGB arrays SlimSAM distils on
    slim_settings: Callable[[], object]  # a fresh compress.slimsam.settings.SlimSettings
    slim_tag: str  # names the SlimSAM schedule, so a changed schedule is rebuilt, not reused


@dataclass
class Built:
    variant: str
    bundle: Path
    checkpoint: Path | None  # what the torch backend runs; None for ONNX-only (quantised) bundles
    compression_seconds: float  # wall time of the compression itself (export excluded)
    build_seconds: float  # the whole build, export included
    built_at: str
    graph_revision: int = 0  # export.onnx_export.GRAPH_REVISION when built (0: before it existed)
    built_in_pid: int = 0  # the process that built it: a child of the benchmark's (0: recorded before children)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "bundle": str(self.bundle),
                           "checkpoint": None if self.checkpoint is None else str(self.checkpoint)}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "Built":
        data = json.loads(text)
        data["bundle"] = Path(data["bundle"])
        data["checkpoint"] = None if data["checkpoint"] is None else Path(data["checkpoint"])
        return cls(**data)

    @property
    def manifest(self) -> dict:
        return json.loads((self.bundle / "manifest.json").read_text())


def cache_dir(work: Path, source: ModelSource, variant: str) -> Path:
    suffix = f"@{source.slim_tag}" if uses_slimsam(variant) else ""
    return work / source.key / f"{variant}{suffix}"


def build_variant(variant: str, source: ModelSource, work: Path, built: dict[str, Built]) -> Built:
    """The bundle of `variant`, from the cache when an earlier run finished it, else built in a
    child process (see the module's docstring). `built` must already hold the recipe's base variant."""
    directory = cache_dir(work, source, variant)
    record = directory.with_name(directory.name + ".json")
    cached = _cached(directory, record)
    if cached is not None:
        return cached
    _in_child_process(f"building {variant} of {source.key}", _build_and_record,
                      variant, _picklable(source), directory, record, built)
    result = _cached(directory, record)
    if result is None:
        raise RuntimeError(f"building {variant} of {source.key}: the child process exited 0 but left no "
                           f"bundle and record at {directory} (or one of another graph revision)")
    return result


def _cached(directory: Path, record: Path) -> Built | None:
    if not (record.is_file() and directory.is_dir()):
        return None
    cached = Built.from_json(record.read_text())
    if cached.graph_revision != GRAPH_REVISION:  # its ONNX files are not what export writes now
        return None
    # The work directory may have moved since: the bundle is the one beside the record.
    return dataclasses.replace(cached, bundle=directory, checkpoint=_torch_checkpoint(directory))


def _picklable(source: ModelSource) -> ModelSource:
    try:
        pickle.dumps(source)
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise TypeError(f"ModelSource {source.key!r} cannot be sent to the build's child process ({err}): make "
                        "its callables module-level functions or functools.partial of them, not lambdas or "
                        "nested functions") from err
    return source


def _in_child_process(what: str, target, *args) -> None:
    """target(*args) in a fresh ("spawn") process, waited for; its output goes where ours does.
    Raises RuntimeError with the child's exit code and traceback when it fails or is killed."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child_main, args=(send, target, args), name=what)
    sys.stdout.flush()  # ours before the child's, in the order they happened
    sys.stderr.flush()
    process.start()
    send.close()  # the child holds its own end: EOF here once it exits
    try:
        process.join()
    finally:
        if process.is_alive():  # we were interrupted (Ctrl-C): the child must not outlive us
            process.terminate()
            process.join()
    try:
        error = receive.recv() if receive.poll() else None  # (the exception's line, its traceback)
    except EOFError:  # the child exited without sending: it succeeded, or was killed
        error = None
    receive.close()
    if process.exitcode != 0:
        # The exception on the first line: callers that show one line (benchmarks/sam2.py's rows) show it.
        raise RuntimeError(f"{what} failed in its child process ({_exit_reason(process.exitcode)})"
                           + (f": {error[0]}\n\nThe child's traceback:\n{error[1]}" if error
                              else "; it reported no exception (see its output above)"))


def _exit_reason(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    name = signal.Signals(-code).name
    hint = ", as the kernel's out-of-memory killer does" if -code == signal.SIGKILL else ""
    return f"exit code {code}: killed by {name}{hint}"


ERROR_TAIL = 4000  # characters of the child's exception and traceback sent back: the end, where the error is


def _child_main(send, target, args) -> None:
    try:
        target(*args)
    except BaseException as err:
        line = traceback.format_exception_only(err)[-1].strip()
        send.send((line[:ERROR_TAIL], traceback.format_exc()[-ERROR_TAIL:]))  # small: the pipe never blocks on it
        send.close()
        raise SystemExit(1)
    send.close()


def _build_and_record(variant: str, source: ModelSource, directory: Path, record: Path,
                      built: dict[str, Built]) -> None:
    """The build itself (in the child): the bundle, then its record, written atomically."""
    definition = DEFINITIONS[variant]
    began = time.perf_counter()
    if definition.quantize:
        compression_seconds = _quantize(built[definition.base], directory, definition.quantize)
    else:
        compression_seconds = _build(definition, source, directory, built)
    result = Built(variant, directory, _torch_checkpoint(directory), compression_seconds,
                   time.perf_counter() - began, datetime.datetime.now().isoformat(timespec="seconds"), GRAPH_REVISION,
                   os.getpid())
    atomic_write(record, lambda tmp: Path(tmp).write_text(result.to_json()))


def _build(definition: Variant, source: ModelSource, out: Path, built: dict[str, Built]) -> float:
    start = built[definition.base] if definition.base else None
    checkpoint = start.checkpoint if start else source.checkpoint()
    recipe = definition.recipe
    if recipe is not None and recipe.needs_images:
        recipe = recipe.with_images(source.slim_images(), source.slim_settings())
    # Parity is skipped: the fidelity measurements of the run compare every variant anyway.
    build_bundle(out, "cpu", checkpoint, run_parity=False, overwrite=True, recipe=recipe)
    compression = open_bundle(out).manifest["compression"]
    own = 0.0 if compression is None else compression["seconds"]
    return own + (start.compression_seconds if start else 0.0)


def _quantize(base: Built, out: Path, method: str) -> float:
    began = time.perf_counter()
    quantize_bundle(base.bundle, out, method, overwrite=True)
    return time.perf_counter() - began


def _torch_checkpoint(bundle: Path) -> Path | None:
    """The checkpoint the bundle's model is; None when the ONNX files are not that model
    (a quantised bundle's manifest still names its fp32 source)."""
    opened = open_bundle(bundle)
    return None if opened.manifest.get("quantization") else opened.checkpoint
