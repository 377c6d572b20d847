"""The one page writer of docs/RESULTS.md and docs/benchmarks/, and what every page shares:
markdown tables, number formats, the machine.

Every page starts with the same header: what measured it (the command that regenerates
it), on which machine, when, and a line of its inputs' digests: the code and values the page
describes (benchmarks/run.py's FORMS names them), each with the SHA-256 it had when the page
was written, so that `python -m benchmarks.run --check-stale` names the page, and the inputs,
that changed since. Pages are written atomically (runtime.atomic), so a killed run leaves the
old page. Nothing here imports onnx or export: the kernel page is written on GPU machines
that may lack them (a "module:NAME" input is imported only when the page names it).
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import inspect
import json
import os
import platform
import re
import sys
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
    # What the page describes (input_digest: repo-relative files, "module:NAME" values and functions);
    # benchmarks/run.py sets them from its FORMS for the pages of docs/.
    inputs: tuple[str, ...] = ()
    # Of those, what only a measurement brings up to date (the code and files its figures were
    # measured with): a page rendered again from its JSON (`measured` set) keeps their digests
    # from the page it replaces, or records them as unrecorded.
    measured_with: tuple[str, ...] = ()
    measured: str | None = None  # a re-rendered page: the header line of the run that measured it


DIGEST_DIGITS = 16  # of each input's SHA-256: enough to tell a change, short enough to read
UNRECORDED = "unrecorded"  # an input whose digest the measurement did not record (measured before digests)
UNREADABLE = "unreadable"  # an input that could not be read when the page was written
INPUTS_LINE = re.compile(r"^Inputs(?P<note>[^(\n]*) \(sha256, \d+ hex digits[^)\n]*\): (?P<inputs>.+)\.$", re.M)


def input_content(name: str) -> bytes:
    """What an input is: a repo-relative file's bytes; for "module:NAME" (NAME may be dotted, as
    Class.method), a function's or class's source, else the value's repr (a table such as
    runtime.backends.choice:CPU_CHOICE, whose values, not its whole file, the page describes)."""
    if ":" not in name:
        return (REPO / name).read_bytes()
    module, _, attributes = name.partition(":")
    found = importlib.import_module(module)
    for attribute in attributes.split("."):
        found = getattr(found, attribute)
    if inspect.isfunction(found) or inspect.ismethod(found) or inspect.isclass(found):
        return inspect.getsource(found).encode()
    return repr(found).encode()


def input_digest(name: str) -> str:
    return hashlib.sha256(input_content(name)).hexdigest()[:DIGEST_DIGITS]


def _digest_when_written(name: str) -> str:
    """input_digest, or UNREADABLE (said on stderr) where the input cannot be read: a page that took
    half an hour to measure is written all the same, and --check-stale names the input."""
    try:
        return input_digest(name)
    except Exception as err:  # a renamed file or function, a module that no longer imports
        print(f"warning: the page's input {name} cannot be read ({type(err).__name__}: {err}); recorded as "
              f"{UNREADABLE}: fix its name in benchmarks/run.py's FORMS", file=sys.stderr)
        return UNREADABLE


def recorded_digests(path: Path) -> dict[str, str] | None:
    """{input: digest} from the page's header, None where it has no inputs line (or no page)."""
    found = INPUTS_LINE.search(path.read_text()) if path.is_file() else None
    if found is None:
        return None
    return dict(entry.rsplit(" ", 1) for entry in found.group("inputs").split(", "))


def inputs_line(digests: dict[str, str], note: str = "") -> str:
    """The header line that records `digests`; `note` says how they were recorded where not by
    writing the page (" recorded DATE by hand, ..."): it may not hold parentheses."""
    listed = ", ".join(f"{name} {digest}" for name, digest in digests.items())
    return (f"Inputs{note} (sha256, {DIGEST_DIGITS} hex digits; `python -m benchmarks.run --check-stale` "
            f"compares them with the code): {listed}.")


def record_inputs(path: Path, digests: dict[str, str], note: str) -> None:
    """Put the inputs line (with `note`) in an existing page's header, the rest of the page as it
    was: after the header paragraph that follows the title, in place of an inputs line there."""
    text = path.read_text()
    line = inputs_line(digests, note)
    if INPUTS_LINE.search(text):
        text = INPUTS_LINE.sub(lambda _: line, text, count=1)
    else:
        paragraphs = text.split("\n\n")
        if len(paragraphs) < 3 or not paragraphs[0].startswith("# "):
            raise ValueError(f"{path} has no title and header paragraph to put its inputs after")
        text = "\n\n".join([*paragraphs[:2], line, *paragraphs[2:]])
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def staleness(path: Path, inputs) -> str | None:
    """Why the page at `path` no longer describes its inputs (naming each input that changed),
    or None while it does. A page without an inputs line (written before pages carried one) is
    stale too: nothing vouches for it."""
    if not path.is_file():
        return "no page (run its command)"
    recorded = recorded_digests(path)
    if recorded is None:
        return "no inputs digest in its header (written before pages carried one)"
    groups = {"changed": [], "not recorded when its figures were measured": [],
              "not in its header (inputs added since)": [], "no longer among its inputs": [], "cannot be read": []}
    for name in inputs:
        if name not in recorded:
            groups["not in its header (inputs added since)"].append(name)
        elif recorded[name] == UNRECORDED:
            groups["not recorded when its figures were measured"].append(name)
        else:
            try:
                if input_digest(name) != recorded[name]:
                    groups["changed"].append(name)
            except Exception as err:  # whatever stops it being read leaves the page unverified
                groups["cannot be read"].append(f"{name} ({type(err).__name__}: {err})")
    groups["no longer among its inputs"] = [name for name in recorded if name not in inputs]
    return "; ".join(f"{why}: {', '.join(names)}" for why, names in groups.items() if names) or None


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


def render(page: Page, command: str, where: dict, previous: dict[str, str] | None = None) -> str:
    """The page's text. `previous`: the inputs' digests in the header of the page it replaces
    (kept for page.measured_with when the page is rendered again from its JSON)."""
    header = (f"Measured {where['date']} by `{page.command or command}` on "
              f"{page.machine or describe(where)}.")
    if page.measured:  # the figures are that run's; only their text is new
        header = f"{page.measured} Rendered again {where['date']} from its JSON by `{command}` (nothing re-measured)."
    lines = [f"# {page.title}", "", header, ""]
    if page.inputs:
        digests = {name: _digest_when_written(name) for name in page.inputs}
        if page.measured:
            digests.update({name: (previous or {}).get(name, UNRECORDED) for name in page.measured_with})
        lines += [inputs_line(digests), ""]
    return "\n".join(lines + [page.intro, "", page.body.rstrip(), ""])


def write_page(page: Page, command: str) -> Path:
    """Print the body, then write the page (and its JSON, when it has data), each atomically."""
    text = render(page, command, machine(), recorded_digests(page.path))
    print(page.body)
    if page.data is not None:
        data = json.dumps(page.data, indent=2, default=float)
        atomic_write(page.path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(data))
    atomic_write(page.path, lambda tmp: Path(tmp).write_text(text))
    print(f"written to {page.path}")
    return page.path
