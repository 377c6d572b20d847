"""engines.json: what a bundle's TensorRT engines are, checked before TensorRT sees them.

Written when the engines are built (export.build where tensorrt imports; the bundle's
tensorrt/build_engines.sh on the device, which runs `python -m runtime.backends.engines_file`),
it records the TensorRT version and GPU they were built for, the model they were built from
and the size and SHA-256 of each engine and of the plugin library. The same record goes into
the bundle's (sealed) manifest, `tensorrt.engines`, which is then the one trusted; engines.json
alone vouches for a folder of engines without a manifest. No tensorrt import: these checks
run, and are tested, anywhere.

    python -m runtime.backends.engines_file BUNDLE/tensorrt --tensorrt 10.3.0 --gpu Orin --compute-capability 8.7
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from plugins.hyperlinear.spec import PLUGIN_LIBRARY

from .. import provenance
from ..atomic import atomic_write
from ..bundle import ENGINE_FILES, MANIFEST, BundleError, sha256_file

ENGINES_INFO = "engines.json"
REBUILD = "rebuild the engines on this machine (bash tensorrt/build_engines.sh in the bundle)"
# The tracking pieces' engines (SAM 2 bundles), built beside the two above where tensorrt/ has their ONNX files.
PIECE_ENGINES = ("memory_encoder.engine", "memory_attention.engine")
ENGINE_SOURCES = {"encoder.engine": "encoder.onnx", "decoder.engine": "decoder.onnx",  # in the tensorrt/ folder
                  "memory_encoder.engine": "memory_encoder.onnx", "memory_attention.engine": "memory_attention.onnx"}


def piece_engines(folder: Path) -> tuple[Path, ...]:
    """The tracking pieces' engines that `folder` holds."""
    return tuple(path for path in (Path(folder) / name for name in PIECE_ENGINES) if path.is_file())


def plugin_library(folder: Path) -> Path | None:
    """The HyperLinear plugin library the engines need, where the bundle has one."""
    return next((path for path in (folder / PLUGIN_LIBRARY, folder / "plugin" / "build" / PLUGIN_LIBRARY)
                 if path.is_file()), None)


def file_hashes(folder: Path) -> dict:
    """{name relative to `folder`: {bytes, sha256}} of the engines (the tracking pieces' too, where built)
    and the plugin library."""
    paths = [folder / name for name in ENGINE_FILES] + list(piece_engines(folder))
    library = plugin_library(folder)
    paths += [library] if library is not None else []
    return {path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
            for path in paths}


def model_digest(folder: Path) -> str | None:
    """The model the engines were built from: the digest in the ONNX files they were parsed from."""
    digests = {provenance.model_digest(provenance.read_metadata(folder / name))
               for name in ENGINE_SOURCES.values() if (folder / name).is_file()}
    return digests.pop() if len(digests) == 1 else None


def record(folder, info: dict) -> dict:
    """Write engines.json for the engines in `folder` (`info`: tensorrt, gpu, compute_capability, ...)
    with their hashes, and the same record into the bundle's manifest when `folder` is a bundle's
    tensorrt/ folder. Returns the record."""
    from ..bundle_writer import update_manifest  # the writer imports the reader, not the other way

    folder = Path(folder)
    entry = {**info, "model_digest": model_digest(folder), "files": file_hashes(folder)}
    atomic_write(folder / ENGINES_INFO, lambda tmp: Path(tmp).write_text(json.dumps(entry, indent=2)))
    bundle = folder.resolve().parent  # resolved: build_engines.sh passes "." (whose .parent is "." again)
    if (bundle / MANIFEST).is_file():
        def built(manifest):
            manifest["tensorrt"] = {**(manifest.get("tensorrt") or {}), "status": "built", "engines": entry}
        update_manifest(bundle, built)
    return entry


def read(folder: Path, manifest: dict | None) -> dict:
    """The engines' record: the manifest's where the bundle has one (sealed), else engines.json.
    Refused where there is none: nothing would say what the engines are."""
    recorded = ((manifest or {}).get("tensorrt") or {}).get("engines")
    if isinstance(recorded, dict) and "files" in recorded:
        return recorded
    path = folder / ENGINES_INFO
    if not path.is_file():
        raise BundleError(f"{folder} has engines but no {ENGINES_INFO}: nothing says which TensorRT, GPU and model "
                          f"they were built for, nor their hashes; {REBUILD}")
    try:
        info = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON ({str(err)[:200]}); {REBUILD}") from None
    if not isinstance(info, dict) or not isinstance(info.get("files"), dict):
        raise BundleError(f"{path} records no engine hashes (built by an older samedge); {REBUILD}")
    return info


def check(folder: Path, engines: tuple[Path, ...], manifest: dict | None, verify: bool) -> dict:
    """The record of the engines in `folder`, after checking that they are the ones recorded (sizes
    and SHA-256, when `verify`) and were built from the bundle's model. Returns the record."""
    info = read(folder, manifest)
    expected = ((manifest or {}).get("model") or {}).get("digest")
    if expected and info.get("model_digest") not in (None, expected):
        raise BundleError(f"the engines in {folder} were built from another model (digest "
                          f"{str(info['model_digest'])[:12]}..., the bundle's {expected[:12]}...); {REBUILD}")
    if verify:
        library = plugin_library(folder)
        for path in engines + ((library,) if library else ()):
            name = path.relative_to(folder).as_posix() if path.is_relative_to(folder) else path.name
            entry = info["files"].get(name)
            if entry is None or path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
                why = "is not recorded" if entry is None else "does not match its recorded size and SHA-256"
                raise BundleError(f"{path} {why}: it was rebuilt by hand, damaged or copied from elsewhere; {REBUILD} "
                                  "(Session(..., verify=False) skips this check at your own risk)")
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the folder holding encoder.engine and decoder.engine (and the "
                                                  "memory pieces' engines, where built)")
    parser.add_argument("--tensorrt", default="unknown")
    parser.add_argument("--gpu", default="unknown")
    parser.add_argument("--compute-capability", default="unknown")
    parser.add_argument("--max-points", type=int)
    parser.add_argument("--max-prompts", type=int)
    parser.add_argument("--max-memory-frames", type=int, help="memory_attention.engine's profile maximum, in frames")
    parser.add_argument("--max-pointers", type=int,
                        help="memory_attention.engine's profile maximum, in object pointers")
    parser.add_argument("--built-by", default="build_engines.sh")
    args = parser.parse_args(argv)
    info = {"tensorrt": args.tensorrt, "gpu": args.gpu, "compute_capability": args.compute_capability,
            "max_points": args.max_points, "max_prompts": args.max_prompts, "built_by": args.built_by}
    if args.max_memory_frames is not None:  # the tracking engines' bounds, recorded where they were built
        info.update(max_memory_frames=args.max_memory_frames, max_pointers=args.max_pointers)
    try:
        entry = record(args.folder, info)
    except (ValueError, OSError) as err:  # BundleError: a manifest edited by hand is not sealed in
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"recorded {len(entry['files'])} files in {args.folder / ENGINES_INFO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
