"""The one page writer of docs/RESULTS.md and docs/benchmarks/, and what every page shares:
markdown tables, number formats, the machine.

Every page starts with the same header: what measured it (the command that regenerates
it), on which machine, when, and a digest of its inputs: the code and values the page
describes (benchmarks/run.py's FORMS names them), so that `python -m benchmarks.run
--check-stale` finds a page older than its code. Pages are written atomically
(runtime.atomic), so a killed run leaves the old page. Nothing here imports onnx or export: the kernel page is written
on GPU machines that may lack them.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import json
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from runtime.atomic import atomic_write
from runtime.bundle_writer import package_versions

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks"
CACHE = REPO / ".cache" / "benchmarks"  # .cache/ is ignored by git
PACKAGES = ("torch", "onnxruntime", "openvino", "onnx", "numpy", "torch-pruning", "segment-anything", "tensorrt")


class Unmeasurable(Exception):
    """This machine cannot measure the page (no GPU, say): nothing is written, exit status 2."""


@dataclass
class Page:
    path: Path
    title: str
    intro: str  # what was measured and how, after the header line
    body: str  # the tables
    data: dict | None = None  # the rows, written as JSON beside the page when given
    machine: str | None = None  # the machine in words, where not this one's (the kernel page: its GPU)
    command: str | None = None  # what regenerates the page, where not the command that wrote it
    inputs: tuple[str, ...] = ()  # what the page describes: repo-relative files and "module:NAME" values
    measured: str | None = None  # a re-rendered page: the header line of the run that measured it


INPUTS_LINE = re.compile(r"^Inputs: sha256 ([0-9a-f]{64}) of (.+)\.$", re.M)


def inputs_digest(inputs) -> str:
    """SHA-256 over each input in order: a file's bytes, or a "module:NAME" value's repr (a table such
    as runtime.backends.choice:CPU_CHOICE, whose values, not its file, the page describes)."""
    digest = hashlib.sha256()
    for name in inputs:
        if ":" in name:
            module, _, attribute = name.partition(":")
            content = repr(getattr(importlib.import_module(module), attribute)).encode()
        else:
            content = (REPO / name).read_bytes()
        digest.update(f"{name}\n{len(content)}\n".encode() + content)
    return digest.hexdigest()


def staleness(path: Path, inputs) -> str | None:
    """Why the page at `path` no longer describes its inputs, or None while it does. A page
    without an inputs line (written before pages carried one) is stale too: nothing vouches for it."""
    if not path.is_file():
        return "no page (run its command)"
    found = INPUTS_LINE.search(path.read_text())
    if found is None:
        return "no inputs digest in its header (written before pages carried one)"
    if found.group(2) != ", ".join(inputs):
        return f"its inputs were {found.group(2)}, the page's form now names {', '.join(inputs)}"
    if found.group(1) != inputs_digest(inputs):
        return f"{', '.join(inputs)} changed since it was written"
    return None


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table; every cell already formatted."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def megabytes(size: int | None) -> str:
    return fmt(None if size is None else size / 1e6, ".2f")


def count(value: float) -> str:
    """1234567 -> '1.23M', 368.7e9 -> '368.7G': the unit follows the size (tiny models too)."""
    for unit, scale, spec in (("G", 1e9, ".1f"), ("M", 1e6, ".2f"), ("k", 1e3, ".1f")):
        if abs(value) >= scale:
            return f"{value / scale:{spec}}{unit}"
    return f"{value:.0f}"


def proc_field(path: str, key: str) -> str | None:
    """The value of the `key:` line of a /proc file (cpuinfo, meminfo, self/status), None without /proc."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (platform.processor() is often empty)."""
    return proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine()


def gpu_name() -> str | None:
    try:
        import torch  # optional here: without torch there is no GPU to name
    except ImportError:
        return None
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def machine() -> dict:
    memory = proc_field("/proc/meminfo", "MemTotal")  # "24587336 kB"
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(),
        "memory_gib": None if memory is None else round(int(memory.split()[0]) / 2**20, 1),
        "system": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "gpu": gpu_name(), "versions": package_versions(PACKAGES),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
    }


def describe(m: dict) -> str:
    """One line: CPU, cores, memory, GPU, system and package versions."""
    memory = "" if m["memory_gib"] is None else f", {m['memory_gib']:.0f} GiB"
    versions = ", ".join(f"{name} {version}" for name, version in m["versions"].items() if version)
    return f"{m['cpu']} ({m['cores']} cores{memory}), GPU: {m['gpu'] or 'none'}, {m['system']}; {versions}"


def render(page: Page, command: str, where: dict) -> str:
    header = (f"Measured {where['date']} by `{page.command or command}` on "
              f"{page.machine or describe(where)}.")
    if page.measured:  # the figures are that run's; only their text is new
        header = f"{page.measured} Rendered again {where['date']} from its JSON by `{command}` (nothing re-measured)."
    lines = [f"# {page.title}", "", header, ""]
    if page.inputs:
        lines += [f"Inputs: sha256 {inputs_digest(page.inputs)} of {', '.join(page.inputs)}.", ""]
    return "\n".join(lines + [page.intro, "", page.body.rstrip(), ""])


def write_page(page: Page, command: str) -> Path:
    """Print the body, then write the page (and its JSON, when it has data), each atomically."""
    text = render(page, command, machine())
    print(page.body)
    if page.data is not None:
        data = json.dumps(page.data, indent=2, default=float)
        atomic_write(page.path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(data))
    atomic_write(page.path, lambda tmp: Path(tmp).write_text(text))
    print(f"written to {page.path}")
    return page.path
