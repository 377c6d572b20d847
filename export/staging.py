"""Where a bundle may be written, and how it replaces an old one without losing either.

A bundle is assembled in a temporary directory beside its target (runtime.atomic's
naming) and renamed into place. Replacing an old bundle takes two renames: the old one
aside, the new one in. A process killed in between leaves the old bundle aside and none
at the target; the next run for that target puts the old one back before anything else
(`recover`), and removes what killed runs left half-written.

`--overwrite` only ever replaces a directory samedge wrote: a bundle whose every file is
listed in its manifest or is one samedge writes later (reports, engines built on the
device), which holds none of the run's inputs.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from runtime.atomic import (ASIDE, PARTIAL, OutputError, check_writable_parent, default_mode, remove,
                            stale_leftovers, temporary_name)
from runtime.bundle import GPU_PARITY_FILE, MANIFEST, PARITY_FILE, UNLISTED_FILES, BundleError, open_bundle, sha256_file


def pinned_files(root: Path) -> dict:
    """Size and SHA-256 of every file below `root` but the manifest and the parity reports
    (a later `runtime.parity` may rewrite those); only model files are pinned."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if name not in (MANIFEST, PARITY_FILE, GPU_PARITY_FILE):
            files[name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return files


def recover(out: Path) -> str | None:
    """Undo what killed runs left for `out`; says what it restored, if anything."""
    restored = None
    for old in stale_leftovers(out, ASIDE):
        if restored is None and not out.exists():
            os.replace(old, out)  # killed between the two renames: the old bundle comes back
            restored = f"restored {out} from {old.name}, left by an interrupted build"
        else:
            remove(old)
    for partial in stale_leftovers(out, PARTIAL):
        remove(partial)
    return restored


def _foreign_files(out: Path, manifest: dict) -> list[str]:
    """Files below `out` that samedge did not write."""
    listed = set(manifest["files"])
    foreign = []
    for path in sorted(out.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        name = path.relative_to(out).as_posix()
        if name not in listed and not any(fnmatch.fnmatch(name, pattern) for pattern in UNLISTED_FILES):
            foreign.append(name)
    return foreign


def prepare_target(out, overwrite: bool, inputs=()) -> Path:
    """Repair what killed runs left (`recover`), then the absolute path to write a bundle
    to, or an OutputError saying why not and what to do.

    `inputs`: files or directories the run reads, which the target must not hold."""
    out = Path(os.path.abspath(out))
    recovered = recover(out)
    if recovered:
        print(recovered)
    if out.is_symlink():
        raise OutputError(f"--out {out} is a symbolic link; name the directory itself")
    cwd = Path.cwd()
    if out == cwd or out in cwd.parents:
        raise OutputError(f"--out {out} is the current directory or holds it; name a new directory, "
                          "e.g. --out bundles/my-model")
    for source in inputs:
        source = Path(os.path.abspath(source))
        if source == out or out in source.parents:
            raise OutputError(f"--out {out} holds the input {source}; writing the bundle there would delete "
                              "it: choose another --out")
    if out.exists():
        _check_replaceable(out, overwrite)
    check_writable_parent(out)
    return out


def _check_replaceable(out: Path, overwrite: bool) -> None:
    if not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    if not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a bundle; --overwrite only replaces bundles samedge wrote")
    if not (out / MANIFEST).is_file():
        shown = _listing(sorted(p.name for p in out.iterdir()))
        raise OutputError(f"--out {out} is not a samedge bundle (no {MANIFEST}; it holds {shown}); "
                          "--overwrite only replaces bundles samedge wrote: choose another --out")
    try:
        manifest = open_bundle(out, verify=False).manifest
    except BundleError as err:
        raise OutputError(f"--out {out} is not a bundle samedge can vouch for ({err}); remove it yourself "
                          "if it is one, or choose another --out") from None
    foreign = _foreign_files(out, manifest)
    if foreign:
        raise OutputError(f"--out {out} holds files samedge did not write ({_listing(foreign)}); --overwrite "
                          "would delete them: move them out of the bundle first, or choose another --out")
    for folder in [out] + [p for p in out.rglob("*") if p.is_dir() and not p.is_symlink()]:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"--out {out}: {folder} is read-only, so the old bundle cannot be removed; "
                              f"make it writable (chmod -R u+w {out}) or choose another --out")


def _listing(names: list[str]) -> str:
    return (", ".join(names[:5]) + (", ..." if len(names) > 5 else "")) or "nothing"


@contextmanager
def staged_bundle(out: Path):
    """A temporary directory beside `out`, renamed to `out` when the block succeeds."""
    work = temporary_name(out, PARTIAL)
    out.parent.mkdir(parents=True, exist_ok=True)
    work.mkdir()
    try:
        yield work
        os.chmod(work, default_mode(directory=True))
        swap_into_place(work, out)
    finally:
        if work.exists():
            shutil.rmtree(work)


def swap_into_place(new: Path, out: Path) -> None:
    """Rename `new` to `out`; an old bundle there is renamed aside first and restored on failure."""
    if not out.exists():
        os.replace(new, out)
        return
    aside = temporary_name(out, ASIDE)  # same parent: renaming a directory there needs no write access to it
    os.replace(out, aside)
    try:
        os.replace(new, out)
    except OSError:
        os.replace(aside, out)
        raise
    shutil.rmtree(aside)
