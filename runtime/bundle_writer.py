"""Writing a bundle: the counterpart of runtime.bundle, which reads one.

`BundleWriter` is the one way samedge writes a bundle (export.build, export.quantize):
files go into a temporary directory beside the target (runtime.atomic's naming), are
hashed once into the manifest, and the directory is renamed into place only when the
block succeeds, so an interrupted run leaves nothing half-written:

    with BundleWriter(out, overwrite, inputs=[checkpoint]) as bundle:
        export_encoder(model, bundle.path(ENCODER_FILE))
        bundle.write_manifest({...})

Replacing an old bundle takes two renames: the old one aside, the new one in. A process
killed in between leaves the old bundle aside and none at the target; the next run for
that target puts the old one back before anything else (`recover`), and removes what
killed runs left half-written.

`--overwrite` only ever replaces a directory samedge wrote: a bundle whose every file is
listed in its manifest or is one samedge writes later (reports, engines built on the
device), which holds none of the run's inputs.
"""

from __future__ import annotations

import datetime
import fnmatch
import importlib.metadata
import json
import os
import platform
import shutil
from pathlib import Path

from .atomic import (ASIDE, PARTIAL, OutputError, atomic_write, check_writable_parent, default_mode, remove, stale_leftovers,
                     temporary_name)
from .bundle import (ANYLABELING_CONFIG_FILE, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, GPU_PARITY_FILE, MANIFEST,
                     PARITY_FILE, SEAL, UNLISTED_FILES, BundleError, read_manifest, open_bundle, seal_manifest,
                     sha256_file)

# Recorded in every manifest: what a bundle's files were made with.
BUNDLE_PACKAGES = ("samedge", "torch", "onnx", "onnxruntime", "segment-anything", "numpy")


def package_versions(packages=BUNDLE_PACKAGES) -> dict:
    """Python's version and each package's (None when not installed)."""
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


class BundleWriter:
    """A bundle being written to `out`: a context manager around its staging directory."""

    def __init__(self, out, overwrite: bool = False, inputs=()):
        """Checks `out` now, before any work (see `prepare_target`)."""
        self.out = prepare_target(out, overwrite, inputs)
        self.root: Path | None = None  # the staging directory, inside the block
        self.files: dict | None = None  # the pinned files, once hashed

    def __enter__(self) -> "BundleWriter":
        self.root = temporary_name(self.out, PARTIAL)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.root.mkdir()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if kind is None:
                os.chmod(self.root, default_mode(directory=True))
                swap_into_place(self.root, self.out)
        finally:
            if self.root.exists():
                shutil.rmtree(self.root)

    def path(self, name: str) -> Path:
        """Where the bundle's file `name` is written now (inside the staging directory)."""
        return self.root / name

    def pin(self) -> dict:
        """Hash the model files written so far; later files are reports, which are not pinned.
        Hashed once (vit_h: 2.5 GB), however often the manifest is written."""
        self.files = pinned_files(self.root)
        return self.files

    def write_manifest(self, manifest: dict) -> None:
        """manifest.json: `manifest`'s sections stamped with the format, this run's time and
        package versions, and the pinned files (hashed now if `pin` was not called). A
        manifest copied from another bundle (export.quantize) gets this bundle's stamp."""
        stamp = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
                 "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        body = {key: value for key, value in manifest.items() if key not in (*stamp, "files", "versions", SEAL)}
        files = self.files if self.files is not None else self.pin()
        full = {**stamp, **body, "files": files, "versions": package_versions()}
        self.path(MANIFEST).write_text(json.dumps(seal_manifest(full), indent=2))


def update_manifest(root, update) -> dict:
    """Change a finished bundle's manifest: `update(manifest)` edits the dict in place; the result is
    sealed again and replaces manifest.json atomically. A manifest that fails its seal is refused
    first (what was edited by hand is not sealed in). Returns the new manifest."""
    path = Path(root) / MANIFEST
    manifest = read_manifest(path)
    update(manifest)
    sealed = seal_manifest(manifest)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(sealed, indent=2)))
    return sealed


def pinned_files(root: Path) -> dict:
    """Size and SHA-256 of every file below `root` but the manifest, the parity reports (a
    later `runtime.parity` may rewrite those) and AnyLabeling's config (its users edit it)."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if name not in (MANIFEST, PARITY_FILE, GPU_PARITY_FILE, ANYLABELING_CONFIG_FILE):
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
        manifest = _older_manifest(out / MANIFEST)  # a bundle of an older format, or one edited since
        if manifest is None:
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


def _older_manifest(path: Path) -> dict | None:
    """A manifest samedge wrote that this samedge no longer opens (an older format, a broken seal):
    what --overwrite needs of it is its file list, to find files samedge did not write."""
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not (isinstance(manifest, dict) and manifest.get("format") == BUNDLE_FORMAT
            and isinstance(manifest.get("files"), dict)):
        return None
    return manifest


def _listing(names: list[str]) -> str:
    return (", ".join(names[:5]) + (", ..." if len(names) > 5 else "")) or "nothing"


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
