"""Skipped tests counted by why, printed at the end of a run (scripts/test.sh loads this plugin).

Every skip this project expects on a machine without a GPU falls into a named group; any
other reason is listed on its own under "unexpected", so a new skip cannot hide among the
known ones.

    python -m pytest -p tests.skip_report
"""

from __future__ import annotations

import re
from collections import Counter

# (group, pattern of the skip reason): the skips a CPU-only machine (CI, developers) expects.
EXPECTED = (
    ("GPU: no CUDA device", re.compile(r"no CUDA GPU|needs a (CUDA )?GPU|CUDA is not available", re.I)),
    ("TensorRT runtime: tensorrt not installed", re.compile(r"tensorrt (is )?not installed|needs tensorrt|"
                                                            r"no module named 'tensorrt'", re.I)),
)
UNEXPECTED = "unexpected"


def group_of(reason: str) -> str:
    for group, pattern in EXPECTED:
        if pattern.search(reason):
            return group
    return UNEXPECTED


def skip_reason(report) -> str:
    """The reason pytest shows for a skipped test (its longrepr is (file, line, "Skipped: why"))."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def grouped(reasons: list[str]) -> tuple[Counter, Counter]:
    """(count per expected group, count per unexpected reason)."""
    groups, unexpected = Counter(), Counter()
    for reason in reasons:
        group = group_of(reason)
        if group == UNEXPECTED:
            unexpected[reason] += 1
        else:
            groups[group] += 1
    return groups, unexpected


def lines(reasons: list[str]) -> list[str]:
    groups, unexpected = grouped(reasons)
    out = [f"{len(reasons)} skipped"]
    out += [f"  {count:4d}  {group}" for group, count in sorted(groups.items())]
    if unexpected:
        out.append(f"  {sum(unexpected.values()):4d}  {UNEXPECTED.upper()} (not a known reason: fix, or add it "
                   "to tests/skip_report.py's EXPECTED with why):")
        out += [f"        {count:4d}  {reason}" for reason, count in unexpected.most_common()]
    return out


def pytest_terminal_summary(terminalreporter):
    reasons = [skip_reason(report) for report in terminalreporter.stats.get("skipped", [])]
    terminalreporter.section("skips by reason")
    for line in lines(reasons):
        terminalreporter.write_line(line)
