"""Write files so that readers never see half of one, and refuse outputs before work starts.

Temporary files and directories are named `.<target>.<host>.<pid>.<hex><suffix>` beside
their target, so a later run can tell the leftovers of a killed process (same host, no
such process) from those of one still running, and clean them up.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from pathlib import Path


PARTIAL = ".partial"  # being written
ASIDE = ".old"  # an old bundle renamed aside while a new one takes its place


class OutputError(ValueError):
    """An output path samedge cannot or must not write, with the reason and the fix."""


def default_mode(directory: bool = False) -> int:
    """The permissions a plain open()/mkdir() would give under the current umask
    (mkstemp/mkdtemp make private 0600/0700 files, wrong for shared outputs)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def temporary_name(target: Path, suffix: str) -> Path:
    """A fresh name beside `target` that says which process made it."""
    return target.parent / f".{target.name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stale_leftovers(target: Path, suffix: str) -> list[Path]:
    """Temporary entries for `target` (see temporary_name) whose process on this host is gone."""
    target = Path(target)
    prefix, host = f".{target.name}.", socket.gethostname()
    stale = []
    if not target.parent.is_dir():
        return stale
    for entry in target.parent.iterdir():
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        parts = name[len(prefix):-len(suffix)].rsplit(".", 2)  # host may hold dots; pid and hex do not
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit() and not _process_alive(int(parts[1])):
            stale.append(entry)
    return sorted(stale)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_output_file(path, what: str = "--out") -> Path:
    """Refuse a file output that cannot be written, before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory; name the file to write, e.g. {path / 'out.png'}")
    if path.exists() and not path.is_file():
        raise OutputError(f"{what} {path} exists and is not a regular file; name another path")
    check_writable_parent(path, what)
    return path


def check_writable_parent(path: Path, what: str = "--out") -> None:
    """The nearest existing ancestor of `path` must be a directory this process can write in."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{what} {path}: {ancestor} is a file, so nothing can be created below it; "
                          "choose another path")
    probe = temporary_name(ancestor / "write-test", ".probe")
    try:  # access() says nothing of read-only mounts or /proc: try it
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as err:
        raise OutputError(f"{what} {path}: cannot write in {ancestor} ({err.strerror or err}); "
                          "choose a writable location") from None


def atomic_write(path, write) -> None:
    """Call `write(tmp_path)` and move the result to `path` only once it is complete.

    Leftovers of earlier writes to `path` that were killed are removed first."""
    path = Path(path)
    check_output_file(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in stale_leftovers(path, PARTIAL):
        remove(leftover)
    tmp = temporary_name(path, PARTIAL)
    try:
        write(str(tmp))
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
