"""Small helpers the benchmark pages share: markdown tables, number formats, the machine."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

from export.build import package_versions
from runtime.atomic import atomic_write

PACKAGES = ("torch", "onnxruntime", "onnx", "numpy", "torch-pruning", "segment-anything", "tensorrt")


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table; every cell already formatted."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_page(path: Path, title: str, intro: str, table_text: str) -> None:
    """Print the table, then write `# title`, the intro and the table to `path` (atomically)."""
    print(table_text)
    page = "\n".join([f"# {title}", "", intro, "", table_text, ""])
    atomic_write(path, lambda tmp: Path(tmp).write_text(page))
    print(f"written to {path}")


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


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def machine() -> dict:
    memory = memory_gib()
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": None if memory is None else round(memory, 1),
        "system": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "gpu": gpu_name(), "versions": package_versions(PACKAGES),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="minutes"),
    }
