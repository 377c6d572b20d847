"""What a bundle directory holds, read from its manifest (see docs/formats.md)."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from . import provenance
from .atomic import ASIDE, stale_leftovers

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "samedge.bundle"
# 2: the manifest is sealed (`seal_manifest`) and every ONNX file names the model it was
# exported from (runtime/provenance.py).
BUNDLE_FORMAT_VERSION = 2
SEAL = "integrity"  # the manifest's own digest, and one per field to say which was edited
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
SINGLE_MASK_DECODER_FILE = "decoder_single.onnx"
BATCH_DECODER_FILE = "decoder_batch.onnx"  # N prompt sets per call (export/batch_decoder.py)
# The encoder as AnyLabeling and samexporter feed it, and AnyLabeling's config (export/clients.py).
PREPROCESS_ENCODER_FILE = "encoder_preprocess.onnx"
ANYLABELING_CONFIG_FILE = "config.yaml"
# The large weights of every ONNX file in a folder, each stored once (export/shared_weights.py).
WEIGHTS_FILE = "weights.bin"
PARITY_FILE = "parity.json"
GPU_PARITY_FILE = "parity.tensorrt.json"
TENSORRT_FOLDER = "tensorrt"  # ONNX files for TensorRT, plugin sources, build script, engines
ENGINE_FILES = ("encoder.engine", "decoder.engine")
# What samedge writes into a bundle besides the files its manifest lists (patterns, relative
# to the bundle): the manifest, reports a later runtime.parity may rewrite, AnyLabeling's
# config (its users edit display names), and what tensorrt/build_engines.sh makes on the device.
UNLISTED_FILES = (MANIFEST, PARITY_FILE, GPU_PARITY_FILE, ANYLABELING_CONFIG_FILE, f"{TENSORRT_FOLDER}/*.engine",
                  f"{TENSORRT_FOLDER}/*.engine.partial", f"{TENSORRT_FOLDER}/*.engine.log",
                  f"{TENSORRT_FOLDER}/engines.json", f"{TENSORRT_FOLDER}/timing.cache",
                  f"{TENSORRT_FOLDER}/plugin/build/*")
# segment_anything's pixel statistics, used when a lone encoder.onnx comes without a manifest.
DEFAULT_PIXEL_MEAN = (123.675, 116.28, 103.53)
DEFAULT_PIXEL_STD = (58.395, 57.12, 57.375)


class BundleError(ValueError):
    """A bundle that cannot be used, with the reason and the fix."""


class BundleWarning(UserWarning):
    """A model opened without what would vouch for it (a lone .onnx file without a manifest)."""


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
    url: str | None = None  # a model served by Triton (runtime/backends/triton_backend.py): no files here


    @property
    def _decoder_section(self) -> dict:
        section = self.manifest.get("decoder") if self.manifest else None
        return section if isinstance(section, dict) else {}

    @property
    def features(self) -> tuple[str, ...]:
        """The encoder's outputs, which the decoders take by name; the last is the image embedding
        (SAM 1: image_embeddings alone; SAM 2: two high-resolution levels, then image_embed)."""
        return tuple(self._decoder_section.get("features") or ("image_embeddings",))

    @property
    def official_decoder(self) -> bool:
        """decoder.onnx has the official SAM ONNX decoder's signature (SAM 1's); else Session decodes with
        decoder_batch.onnx, and decoder.onnx is for the clients (SAM 2's is samexporter's)."""
        return bool(self._decoder_section.get("official", True))

    @property
    def multimask(self) -> str:
        """What predict's multimask_output=True answers: "all", masks 1..3 (SAM 1, SAM 2); "best", the
        best-scored of them alone (SAM-HQ's SamPredictor)."""
        return self._decoder_section.get("multimask", "all")

    @property
    def prompt_layout(self) -> str:
        """Where box corners go among the points (runtime/prompts.py's LAYOUTS)."""
        return self._decoder_section.get("prompt_layout", "sam")

    @property
    def resize(self) -> str:
        """The resize rule of runtime/geometry.py ("longest_side": SAM 1's, also for bundles before the field)."""
        preprocessing = self.manifest.get("preprocessing") if self.manifest else None
        return (preprocessing or {}).get("resize_rule") or "longest_side"

    @property
    def logit_clamp(self) -> float | None:
        """Session clamps the batch decoder's low-res logits to +-this (SAM 2's image predictor: 32); None: not."""
        return self._decoder_section.get("logit_clamp")

    @property
    def tracking(self) -> dict | None:
        """The manifest's tracking section (SAM 2's video settings, runtime/tracker.py); None: the bundle's
        models do not track."""
        section = self.manifest.get("tracking") if self.manifest else None
        return section if isinstance(section, dict) else None

    @property
    def batch_decoder(self) -> Path | None:
        """decoder_batch.onnx, None where the bundle has none (built before it existed)."""
        path = self.root / BATCH_DECODER_FILE
        return path if self.encoder is not None and path.is_file() else None

    @property
    def samedge_nodes(self) -> bool | None:
        """Whether the ONNX files hold samedge nodes (Birkhoff codes); None when the manifest
        does not say (a lone encoder.onnx, or a bundle from before the field)."""
        return self.manifest.get("model", {}).get("samedge_nodes")

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
        """Check every model file against the sizes and SHA-256 hashes in the manifest, but for
        the encoder this bundle was not opened with (checked when it is: vit_h's is 2.5 GB)."""
        other = PREPROCESS_ENCODER_FILE if self.encoder is None or self.encoder.name == ENCODER_FILE else ENCODER_FILE
        for name, info in self.manifest.get("files", {}).items():
            if name in (other, f"{other}.data"):
                continue
            path = self.root / name
            if not path.is_file():
                raise BundleError(f"bundle {self.root} lacks {name}; rebuild it with python -m export.build")
            if path.stat().st_size != info["bytes"] or sha256_file(path) != info["sha256"]:
                raise BundleError(f"{path} does not match the manifest: it was edited, damaged or copied from "
                                  "another bundle. Rebuild the bundle (or restore the file); Session(..., "
                                  "verify=False) skips this check at your own risk")


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _fields(body: dict) -> dict:
    """The manifest's fields one level into each section ("preprocessing.pixel_mean"), so that a
    refusal can say which was edited."""
    fields = {}
    for key, value in body.items():
        if isinstance(value, dict) and value:
            fields.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            fields[key] = value
    return fields


def _short_digest(value) -> str:
    return hashlib.sha256(_canonical(value)).hexdigest()[:16]


def seal_manifest(manifest: dict) -> dict:
    """`manifest` with its seal: the SHA-256 of its canonical JSON (the seal left out) and a
    short digest of each field. The files' hashes are in the manifest, so the seal covers them too."""
    body = {key: value for key, value in manifest.items() if key != SEAL}
    return {**body, SEAL: {"sha256": hashlib.sha256(_canonical(body)).hexdigest(),
                           "fields": {name: _short_digest(value) for name, value in _fields(body).items()}}}


def check_seal(manifest: dict, path) -> None:
    """Refuse a manifest edited after it was written, naming the fields that changed."""
    seal = manifest.get(SEAL)
    if not (isinstance(seal, dict) and isinstance(seal.get("sha256"), str) and isinstance(seal.get("fields"), dict)):
        raise BundleError(f"{path} has no {SEAL!r} seal (or a damaged one): it was edited or not written by "
                          "samedge; rebuild the bundle with python -m export.build")
    body = {key: value for key, value in manifest.items() if key != SEAL}
    if hashlib.sha256(_canonical(body)).hexdigest() == seal["sha256"]:
        return
    sealed, now = seal["fields"], _fields(body)
    changed = [name for name in now if name in sealed and _short_digest(now[name]) != sealed[name]]
    added = [name for name in now if name not in sealed]
    removed = [name for name in sealed if name not in now]
    what = "; ".join(part for part in (
        f"changed: {', '.join(changed[:6])}" if changed else "", f"added: {', '.join(added[:6])}" if added else "",
        f"removed: {', '.join(removed[:6])}" if removed else "") if part) or f"its {SEAL!r} record itself"
    raise BundleError(f"{path} was edited after the bundle was built ({what}): the model files were built and "
                      "checked for the values it had. Restore the manifest, or rebuild the bundle with python -m "
                      "export.build for other values")


def check_provenance(bundle: "Bundle") -> None:
    """The ONNX files a Session runs must come from one model, the manifest's, whatever `verify`
    says (hashes are skipped with verify=False, this is not: it reads a few bytes per file)."""
    files = [path for path in (bundle.encoder, bundle.decoder, bundle.batch_decoder) if path is not None]
    expected = bundle.manifest.get("model", {}).get("digest") if bundle.manifest else None
    digests = {path: provenance.model_digest(_metadata(path)) for path in files}
    if expected is None:  # a lone encoder.onnx and the decoder beside it
        known = {digest for digest in digests.values() if digest is not None}
        if len(known) > 1:
            raise BundleError(f"{', '.join(p.name for p in files)} in {bundle.root} were exported from different "
                              "models (their samedge model digests differ): they do not belong together; use the "
                              "files of one bundle")
        return
    for path, digest in digests.items():
        if digest != expected:
            found = "carries no samedge model digest" if digest is None else \
                f"was exported from another model (digest {digest[:12]}..., the manifest's {expected[:12]}...)"
            raise BundleError(f"{path} {found}: it was copied from another bundle or model. Restore the bundle's "
                              "own file, or rebuild the bundle with python -m export.build")


def _metadata(path: Path) -> dict[str, str]:
    try:
        return provenance.read_metadata(path)
    except ValueError as err:  # UnicodeDecodeError is one
        raise BundleError(f"{path} is not a readable ONNX file ({err}): it is damaged or not a model; rebuild the "
                          "bundle with python -m export.build (or restore the file)") from None


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: Path) -> dict:
    """The manifest's JSON, with every field the runtime relies on checked."""
    fix = "rebuild the bundle with python -m export.build"
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON ({str(err)[:200]}): the manifest is damaged; {fix}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path} is not a samedge bundle manifest (no \"format\": \"{BUNDLE_FORMAT}\"); {fix}")
    if manifest.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"bundle format version {manifest.get('format_version')} is not "
                          f"{BUNDLE_FORMAT_VERSION}; rebuild it with this samedge")
    check_seal(manifest, path)
    for key in ("model", "preprocessing", "files"):
        if not isinstance(manifest.get(key), dict):
            raise BundleError(f"{path} lacks its {key!r} section or it is not an object: the manifest is "
                              f"damaged; {fix}")
    _check_preprocessing(manifest["preprocessing"], path, fix)
    for name, info in manifest["files"].items():
        if not (isinstance(info, dict) and isinstance(info.get("bytes"), int) and isinstance(info.get("sha256"), str)):
            raise BundleError(f"{path}: the entry of {name!r} in 'files' lacks bytes/sha256; {fix}")
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{path} lists {name!r}, outside the bundle: the manifest was tampered with; {fix}")
    return manifest


def _check_preprocessing(preprocessing: dict, path: Path, fix: str) -> None:
    """img_size a positive integer, pixel_mean three finite numbers, pixel_std three positive ones."""
    size = preprocessing.get("img_size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise BundleError(f"{path}: preprocessing.img_size is {size!r}, not a positive integer; {fix}")
    for key, low in (("pixel_mean", None), ("pixel_std", 0.0)):
        values = preprocessing.get(key)
        numbers = isinstance(values, list) and len(values) == 3 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        if not numbers or (low is not None and min(values) <= low):
            wanted = "three positive numbers" if low is not None else "three finite numbers"
            raise BundleError(f"{path}: preprocessing.{key} is {values!r}, not {wanted} (one per RGB channel, "
                              f"0..255 units); {fix}")


def open_bundle(source, verify: bool = True) -> Bundle:
    """A bundle directory, or a lone encoder.onnx with decoder.onnx beside it. A bundle's
    encoder_preprocess.onnx (or encoder.onnx) names the bundle with that encoder.

    `verify` checks every file the manifest lists against its size and SHA-256, so files
    that were edited or come from another bundle are refused (docs/formats.md)."""
    path = Path(source)
    encoder_name = ENCODER_FILE
    if path.is_file() and path.name in (ENCODER_FILE, PREPROCESS_ENCODER_FILE) and (path.parent / MANIFEST).is_file():
        path, encoder_name = path.parent, path.name  # an encoder inside a bundle: its manifest knows the pre-processing
    if path.is_dir():
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{path} has no {MANIFEST}; is it a bundle made by python -m export.build?")
        manifest = read_manifest(manifest_path)
        preprocessing = manifest["preprocessing"]
        bundle = Bundle(
            root=path,
            encoder=path / encoder_name,
            decoder=path / DECODER_FILE,
            img_size=preprocessing["img_size"],
            pixel_mean=tuple(preprocessing["pixel_mean"]),
            pixel_std=tuple(preprocessing["pixel_std"]),
            manifest=manifest,
        )
    elif path.is_file() and path.suffix == ".onnx":
        bundle = _lone_model(path)
    elif path.suffix in (".engine", ".plan"):
        return _open_engine(path, verify)
    elif not path.exists():
        aside = stale_leftovers(path, ASIDE)
        if aside:
            raise BundleError(f"{source} does not exist: a build replacing it was interrupted and left the previous "
                              f"bundle in {aside[0]}; run the build again (it puts the old one back first), or "
                              f"rename it to {path.name}")
        raise BundleError(f"{source} does not exist; pass a bundle directory made by python -m export.build")
    else:
        raise BundleError(f"{source} is neither a bundle directory, an encoder .onnx nor a TensorRT .engine file")
    for part in (bundle.encoder, bundle.decoder):
        if not part.is_file():
            raise BundleError(f"{part} is missing; a bundle needs {ENCODER_FILE} and {DECODER_FILE}")
    check_provenance(bundle)
    if verify:
        bundle.verify()
    engines = tuple(path / TENSORRT_FOLDER / name for name in ENGINE_FILES) if path.is_dir() else ()
    if engines and all(engine.is_file() for engine in engines):
        bundle.engines = engines
    return bundle


def _lone_model(encoder: Path) -> Bundle:
    """An encoder.onnx outside a bundle, with decoder.onnx beside it: its pre-processing is what the
    file says it was exported for; a file that does not say gets SAM's, with a warning."""
    decoder = encoder.parent / DECODER_FILE
    recorded = provenance.preprocessing(_metadata(encoder))
    if recorded is None:
        warnings.warn(f"{encoder} comes without a manifest and does not say which model it is: SAM's default pixel "
                      f"statistics (mean {DEFAULT_PIXEL_MEAN}, std {DEFAULT_PIXEL_STD}) are assumed and its pairing "
                      f"with {decoder.name} is not checked. Open the bundle directory it came from, or export it with "
                      "python -m export.build", BundleWarning, stacklevel=3)
        return Bundle(root=encoder.parent, encoder=encoder, decoder=decoder)
    return Bundle(root=encoder.parent, encoder=encoder, decoder=decoder, img_size=recorded["img_size"],
                  pixel_mean=tuple(recorded["pixel_mean"]), pixel_std=tuple(recorded["pixel_std"]))


def _open_engine(path: Path, verify: bool) -> Bundle:
    """An encoder engine with its decoder engine beside it (in a bundle's tensorrt/ or alone)."""
    if not path.is_file():
        raise BundleError(f"{path} does not exist")
    decoder = path.with_name(f"decoder{path.suffix}")
    if not decoder.is_file():
        raise BundleError(f"{decoder} is missing: an encoder engine needs the decoder engine beside it")
    folder = path.parent
    if folder.name == TENSORRT_FOLDER and (folder.parent / MANIFEST).is_file():
        bundle = open_bundle(folder.parent, verify)  # the manifest knows the pre-processing
        bundle.engines = (path, decoder)
        return bundle
    return Bundle(root=folder, encoder=None, decoder=None, engines=(path, decoder))
