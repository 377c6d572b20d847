"""What a bundle directory holds, read from its manifest (see docs/formats.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "samedge.bundle"
BUNDLE_FORMAT_VERSION = 1
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
SINGLE_MASK_DECODER_FILE = "decoder_single.onnx"
PARITY_FILE = "parity.json"
TENSORRT_FOLDER = "tensorrt"  # ONNX files for TensorRT, plugin sources, build script, engines
ENGINE_FILES = ("encoder.engine", "decoder.engine")
# segment_anything's pixel statistics, used when a lone encoder.onnx comes without a manifest.
DEFAULT_PIXEL_MEAN = (123.675, 116.28, 103.53)
DEFAULT_PIXEL_STD = (58.395, 57.12, 57.375)


class BundleError(ValueError):
    """A bundle that cannot be used, with the reason and the fix."""


@dataclass
class Bundle:
    root: Path
    encoder: Path | None  # ONNX files; None for bare engines
    decoder: Path | None
    img_size: int | None = None  # None: read from the encoder's input shape
    pixel_mean: tuple = DEFAULT_PIXEL_MEAN
    pixel_std: tuple = DEFAULT_PIXEL_STD
    manifest: dict = field(default_factory=dict)
    engines: tuple[Path, Path] | None = None  # TensorRT encoder and decoder engines, when built


    @property
    def checkpoint(self) -> Path | None:
        """The checkpoint the bundle was built from, when it is still where it was."""
        source = self.manifest.get("model", {}).get("checkpoint")
        if not source:
            return None
        path = Path(source)
        if not path.is_absolute():
            path = (self.root / path).resolve()
        return path if path.is_file() else None

    def verify(self) -> None:
        """Check every model file against the sizes and SHA-256 hashes in the manifest."""
        for name, info in self.manifest.get("files", {}).items():
            path = self.root / name
            if not path.is_file():
                raise BundleError(f"bundle {self.root} lacks {name}; rebuild it with python -m export.build")
            if path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
                raise BundleError(f"{path} does not match the manifest (corrupt or replaced); rebuild the bundle")


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_bundle(source) -> Bundle:
    """A bundle directory, or a lone encoder.onnx with decoder.onnx beside it."""
    path = Path(source)
    if path.is_file() and path.name == ENCODER_FILE and (path.parent / MANIFEST).is_file():
        path = path.parent  # an encoder inside a bundle: its manifest knows the pre-processing
    if path.is_dir():
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{path} has no {MANIFEST}; is it a bundle made by python -m export.build?")
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise BundleError(f"{manifest_path} is not valid JSON ({err}); rebuild the bundle") from err
        if manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{manifest_path} is not a samedge bundle manifest")
        if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
            raise BundleError(f"bundle format version {manifest.get('format_version')} is not "
                              f"{BUNDLE_FORMAT_VERSION}; rebuild it with this samedge")
        preprocessing = manifest["preprocessing"]
        bundle = Bundle(
            root=path,
            encoder=path / ENCODER_FILE,
            decoder=path / DECODER_FILE,
            img_size=int(preprocessing["img_size"]),
            pixel_mean=tuple(preprocessing["pixel_mean"]),
            pixel_std=tuple(preprocessing["pixel_std"]),
            manifest=manifest,
        )
    elif path.is_file() and path.suffix == ".onnx":
        bundle = Bundle(root=path.parent, encoder=path, decoder=path.parent / DECODER_FILE)
    elif path.suffix in (".engine", ".plan"):
        return _open_engine(path)
    else:
        raise BundleError(f"{source} is neither a bundle directory, an encoder .onnx nor a TensorRT .engine file")
    for part in (bundle.encoder, bundle.decoder):
        if not part.is_file():
            raise BundleError(f"{part} is missing; a bundle needs {ENCODER_FILE} and {DECODER_FILE}")
    engines = tuple(path / TENSORRT_FOLDER / name for name in ENGINE_FILES) if path.is_dir() else ()
    if engines and all(engine.is_file() for engine in engines):
        bundle.engines = engines
    return bundle


def _open_engine(path: Path) -> Bundle:
    """An encoder engine with its decoder engine beside it (in a bundle's tensorrt/ or alone)."""
    if not path.is_file():
        raise BundleError(f"{path} does not exist")
    decoder = path.with_name(f"decoder{path.suffix}")
    if not decoder.is_file():
        raise BundleError(f"{decoder} is missing: an encoder engine needs the decoder engine beside it")
    folder = path.parent
    if folder.name == TENSORRT_FOLDER and (folder.parent / MANIFEST).is_file():
        bundle = open_bundle(folder.parent)  # the manifest knows the pre-processing
        bundle.engines = (path, decoder)
        return bundle
    return Bundle(root=folder, encoder=None, decoder=None, engines=(path, decoder))
