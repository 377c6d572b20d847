"""A Triton model repository from a bundle: the bundle served by NVIDIA Triton Inference Server.

    python -m export.triton bundles/demo-cpu --out bundles/demo-triton
    python -m export.build --target triton                 # the same, building the bundle first
    python -m runtime.serving.server bundles/demo-triton   # serve it (the wheel's tritonserver)

The repository holds one Python-backend model, `samedge` (runtime/serving/triton_model.py), that
serves the bundle copied into its version folder with samedge's own backends, and speaks
runtime/serving/protocol.py: an image is encoded once and kept on the server, then prompted many
times; Triton's dynamic batcher merges prompt requests on one image into one decoder call.

    REPO/samedge/config.pbtxt          inputs and outputs from the bundle's ONNX files; the manifest
    REPO/samedge/<version>/model.py    imports samedge's model class
    REPO/samedge/<version>/bundle/     the bundle, checked against its manifest's hashes when loaded
    REPO/samedge-repository.json       what was written from which bundle, every file's SHA-256

`--version N` adds a version beside those already there (Triton serves the newest; a client names
another with grpc://host:8001/samedge/N). The whole repository is written beside the target and
renamed into place, so a server polling it never sees half a model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import onnx
from google.protobuf import text_format

from runtime.atomic import PARTIAL, OutputError, temporary_name
from runtime.bundle import BATCH_DECODER_FILE, ENCODER_FILE, SEAL, BundleError, open_bundle, sha256_file
from runtime.bundle_writer import recover, swap_into_place
from runtime.serving.protocol import (BATCH_OUTPUTS, HAS_MASK_INPUT, IMAGE_KEY, KEY_BYTES, MANIFEST_PARAMETER, MASKS,
                                      MAX_PROMPTS, MODEL, ORIGINAL_SIZE, PIXELS, PROTOCOL, PROTOCOL_PARAMETER)
from runtime.serving.protocol import (END, FRAME, FRAME_INDEX, MASK_LOGITS, OBJECT_IDS, PROMPT_BOXES, PROMPT_LABELS,
                                      PROMPT_OBJECT_IDS, PROMPT_POINTS, START, STREAM, STREAMS_HELD, TRACKER_SUFFIX)
from runtime.serving.protocol import ENGINE_NATIVE, RECORD
from runtime.serving.tracker_model import DEFAULT_IDLE_SECONDS
from runtime.serving.triton_model import DEFAULT_CACHE_MEGABYTES

from .triton_native import FLAVOURS, ModelFolder, native_models

RECORD_FORMAT = "samedge.triton-repository"
MODEL_FILE = "model.py"


def model_source(module: str) -> str:
    return (f'"""samedge\'s Triton model: runtime/serving/{module}.py (this version\'s bundle is ./bundle)."""\n\n'
            f"from runtime.serving.{module} import TritonPythonModel  # noqa: F401 (Triton looks it up here)\n")
# Microseconds Triton waits to merge requests into one execute call: a decoder call on CPU takes milliseconds.
QUEUE_DELAY_US = 2000
MAX_STREAMS = 64  # video streams one tracker instance holds at once (Triton's max_candidate_sequences)


def model_config(bundle, name: str = MODEL, backend: str = "auto", gpu: bool = False,
                 cache_megabytes: int = DEFAULT_CACHE_MEGABYTES, queue_delay_us: int = QUEUE_DELAY_US):
    """The samedge model's config (a tritonclient ModelConfig message) for `bundle`."""
    from tritonclient.grpc import model_config_pb2 as pb

    encoder = _signature(bundle.root / ENCODER_FILE)
    features = [name for name in bundle.features]
    batch = _signature(bundle.root / BATCH_DECODER_FILE)
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=MAX_PROMPTS)
    (image_shape,) = encoder["inputs"].values()

    def add(where, name: str, dims) -> None:
        tensor = where.add()
        tensor.name, tensor.data_type = name, pb.TYPE_UINT8 if name == IMAGE_KEY else pb.TYPE_FP32
        tensor.dims.extend(int(d) for d in dims)
        if where is config.input:
            tensor.optional = True  # a request holds the inputs of its kind only (protocol.request_kind)

    add(config.input, PIXELS, image_shape[1:])
    add(config.input, IMAGE_KEY, [KEY_BYTES])
    for name, shape in batch["inputs"].items():
        if name not in features:
            add(config.input, name, [1] if name == HAS_MASK_INPUT else shape[1:])
    add(config.output, IMAGE_KEY, [KEY_BYTES])
    side = 4 * encoder["outputs"][features[-1]][-1]  # the decoder upscales the embedding grid 4x
    add(config.output, BATCH_OUTPUTS[0], batch["outputs"][BATCH_OUTPUTS[0]][1:])
    add(config.output, BATCH_OUTPUTS[1], [4, side, side])
    for name in features:
        add(config.output, name, encoder["outputs"][name][1:])
    if bundle.official_decoder:  # SAM 1's predict: the official decoder, which upscales to orig_im_size
        add(config.input, ORIGINAL_SIZE, [2])
        add(config.output, MASKS, [4, -1, -1])
    # One instance: each would keep its own embeddings, and a prompt reaching another than its image's would
    # send the image again. On a GPU box, GPU 0 (Triton would otherwise put an instance on every GPU).
    config.instance_group.add(count=1, kind=pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU,
                              gpus=[0] if gpu else [])
    config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    config.parameters["backend"].string_value = backend
    config.parameters["cache_megabytes"].string_value = str(cache_megabytes)
    config.parameters[PROTOCOL_PARAMETER].string_value = PROTOCOL
    return config


def tracker_config(name: str, backend: str = "auto", gpu: bool = False, idle_seconds: float = DEFAULT_IDLE_SECONDS,
                   streams: int = MAX_STREAMS):
    """The `<name>_tracker` model's config: a stream per Triton sequence (runtime/serving/tracker_model.py)."""
    from tritonclient.grpc import model_config_pb2 as pb

    config = pb.ModelConfig(name=name + TRACKER_SUFFIX, backend="python", max_batch_size=8)
    tensors = [(FRAME, pb.TYPE_UINT8, [-1, -1, 3]), (PROMPT_OBJECT_IDS, pb.TYPE_INT32, [-1]),
               (PROMPT_POINTS, pb.TYPE_FP32, [-1, -1, 2]), (PROMPT_LABELS, pb.TYPE_FP32, [-1, -1]),
               (PROMPT_BOXES, pb.TYPE_FP32, [-1, 4])]
    for tensor_name, data_type, dims in tensors:
        config.input.add(name=tensor_name, data_type=data_type, dims=dims, optional=True)
    for tensor_name, data_type, dims in ((OBJECT_IDS, pb.TYPE_INT32, [-1]), (MASK_LOGITS, pb.TYPE_FP32, [-1, 1, -1, -1]),
                                         (FRAME_INDEX, pb.TYPE_INT64, [1]), (STREAMS_HELD, pb.TYPE_INT32, [1])):
        config.output.add(name=tensor_name, data_type=data_type, dims=dims)
    batcher = config.sequence_batching
    batcher.max_sequence_idle_microseconds = int(idle_seconds * 1e6)
    batcher.oldest.max_candidate_sequences = streams  # streams open at once; more wait for one to end
    for control_name, kind in ((START, pb.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START),
                               (END, pb.ModelSequenceBatching.Control.CONTROL_SEQUENCE_END)):
        batcher.control_input.add(name=control_name).control.add(kind=kind, fp32_false_true=[0, 1])
    batcher.control_input.add(name=STREAM).control.add(
        kind=pb.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID, data_type=pb.TYPE_UINT64)
    config.instance_group.add(count=1, kind=pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU,
                              gpus=[0] if gpu else [])
    config.parameters["backend"].string_value = backend
    config.parameters["stream_idle_seconds"].string_value = str(idle_seconds)
    config.parameters[PROTOCOL_PARAMETER].string_value = PROTOCOL
    return config


def _signature(path: Path) -> dict:
    """{inputs|outputs: {name: dims}} of an ONNX file, dynamic dimensions as -1."""
    graph = onnx.load(path, load_external_data=False).graph

    def dims(value) -> list[int]:
        return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]

    initializers = {tensor.name for tensor in graph.initializer}
    return {"inputs": {v.name: dims(v) for v in graph.input if v.name not in initializers},
            "outputs": {v.name: dims(v) for v in graph.output}}


def write_repository(bundle_dir, out, version: int = 1, name: str = MODEL, backend: str = "auto", gpu: bool = False, cache_megabytes: int = DEFAULT_CACHE_MEGABYTES, overwrite: bool = False,
                     stream_idle_seconds: float = DEFAULT_IDLE_SECONDS, flavour: str = "python") -> Path:
    """Write (or add `version` to) the model `name` of the repository `out`, serving the bundle `bundle_dir`
    (other models and versions already there stay); returns `out`. `flavour`: python (samedge's backends in
    Triton's Python backend) or onnxruntime / tensorrt (Triton's own backends, export/triton_native.py)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour {flavour!r}: choose one of {FLAVOURS}")
    if not name.replace("-", "_").isidentifier():
        raise ValueError(f"model name {name!r}: use letters, digits, _ and - (it is a folder and a URL part)")
    bundle = open_bundle(bundle_dir, verify=True)
    if bundle.batch_decoder is None:
        raise BundleError(f"{bundle_dir} has no {BATCH_DECODER_FILE}; rebuild it with python -m export.build")
    out = Path(os.path.abspath(out))
    recover(out)
    record = _existing_record(out)
    served = (record or {}).get("models", {}).get(name, {})
    if str(version) in served and not overwrite:
        raise FileExistsError(f"{out} already serves {name} version {version}; pass --version "
                              f"{max(map(int, served)) + 1} to add one, or --overwrite to replace it")
    if out.exists() and record is None:
        raise OutputError(f"--out {out} exists and is not a repository samedge wrote (no {RECORD}): choose another --out")
    staging = temporary_name(out, PARTIAL)
    try:
        if out.exists():
            shutil.copytree(out, staging, copy_function=os.link)  # the other versions, as they are (hard links)
        else:
            staging.mkdir(parents=True)
        for model_name, config, fill in _models(bundle, name, backend, gpu, cache_megabytes,
                                                stream_idle_seconds, flavour):
            model = staging / model_name
            model.mkdir(exist_ok=True)
            folder = model / str(version)
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            fill(folder)
            config.version_policy.all.SetInParent()  # every version written is served; clients name one or the newest
            config = _with_versions(model / "config.pbtxt", config, version, bundle, overwrite)
            _write(model / "config.pbtxt", text_format.MessageToString(config))
        models = dict((record or {}).get("models", {}))
        versions = models[name] = dict(served)
        versions[str(version)] = {"bundle": str(Path(bundle_dir).resolve()),
                                  "bundle_manifest_sha256": bundle.manifest.get(SEAL, {}).get("sha256"),
                                  "flavour": flavour, "backend": backend}
        files = {path.relative_to(staging).as_posix(): sha256_file(path)
                 for path in sorted(staging.rglob("*")) if path.is_file() and path.name != RECORD}
        _write(staging / RECORD, json.dumps({"format": RECORD_FORMAT, "protocol": PROTOCOL, "models": models,
                                                  "files": files}, indent=2))
        swap_into_place(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out


def _models(bundle, name, backend, gpu, cache_megabytes, idle_seconds, flavour) -> list[ModelFolder]:
    """The repository's models for `bundle`: the samedge model, its tracker (SAM 2), native models."""
    def python_model(module: str, with_bundle: bool = True):
        def fill(folder: Path) -> None:
            if with_bundle:
                _copy_bundle(bundle, folder / "bundle")
            _write(folder / MODEL_FILE, model_source(module))
        return fill

    front = model_config(bundle, name, backend, gpu, cache_megabytes)
    models = [ModelFolder(name, front, python_model("triton_model", with_bundle=flavour == "python"))]
    if flavour != "python":
        front.parameters["engine"].string_value = ENGINE_NATIVE
        models += native_models(bundle, name, flavour, gpu, _signature)
    if bundle.tracking is not None:  # SAM 2: video streams, on samedge's backends (the memory pieces) in all flavours
        models.append(ModelFolder(name + TRACKER_SUFFIX, tracker_config(name, backend, gpu, idle_seconds),
                                  python_model("tracker_model")))
    return models


def _with_versions(path: Path, config, version: int, bundle, overwrite: bool):
    """`config` for a model folder that may serve other versions already. Triton reads one config per model,
    so a new version must leave everything but the manifests as it is (a bundle of another image size,
    flavour or backend goes under another --name); each version's manifest is its own parameter."""
    from tritonclient.grpc import model_config_pb2 as pb

    if path.is_file():
        existing = text_format.Parse(path.read_text(), pb.ModelConfig())
        held = {key: value.string_value for key, value in existing.parameters.items() if key.startswith(MANIFEST_PARAMETER)}
        for key in held:
            del existing.parameters[key]
        if existing != config:
            raise OutputError(f"{config.name} in {path.parent.parent} serves other versions with another config (input "
                              "sizes, flavour, backend, device or cache): a version must keep it; write this bundle "
                              "under another --name")
        for key, value in held.items():
            config.parameters[key].string_value = value
    config.parameters[f"{MANIFEST_PARAMETER}_{version}"].string_value = json.dumps(bundle.manifest, sort_keys=True)
    return config


def _write(path: Path, text: str) -> None:
    """A new file at `path`: the staging copy of an existing repository hard-links its files, which must
    not be written through (the live repository would change before the rename)."""
    path.unlink(missing_ok=True)
    path.write_text(text)


def _existing_record(out: Path) -> dict | None:
    if not (out / RECORD).is_file():
        return None
    record = json.loads((out / RECORD).read_text())
    if record.get("format") != RECORD_FORMAT:
        raise OutputError(f"{out / RECORD} is not a samedge repository record: choose another --out")
    return record


def _copy_bundle(bundle, target: Path) -> None:
    """The bundle's files, copied: not hard-linked, as onnx refuses external data with several links (a
    "hardlink attack"), which would break the user's bundle and the server's copy alike."""
    shutil.copytree(bundle.root, target, ignore=shutil.ignore_patterns(".*", "__pycache__"))


def build_repository(out, build_options: dict, **options) -> dict | None:
    """`export.build --target triton`: a cpu bundle (export.build.build_bundle with `build_options`) built
    beside `out`, then its repository (write_repository's `options`); the bundle's parity report."""
    from .build import build_bundle

    out = Path(os.path.abspath(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.bundle-", dir=out.parent) as scratch:
        bundle = Path(scratch) / "bundle"
        report = build_bundle(bundle, "cpu", **build_options)
        write_repository(bundle, out, **options)
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.triton", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path, help="a bundle made by python -m export.build")
    parser.add_argument("--out", type=Path, required=True, help="the model repository to write (or add a version to)")
    parser.add_argument("--name", default=MODEL, help=f"the model's name in the repository (default {MODEL})")
    parser.add_argument("--version", type=int, default=1, help="the model version to write (default 1)")
    parser.add_argument("--backend", default="auto", help="the samedge backend the server runs (default auto)")
    parser.add_argument("--gpu", action="store_true", help="the models on GPU 0 (KIND_GPU)")
    parser.add_argument("--cache-megabytes", type=int, default=DEFAULT_CACHE_MEGABYTES,
                        help=f"embeddings kept per instance (default {DEFAULT_CACHE_MEGABYTES})")
    parser.add_argument("--flavour", choices=FLAVOURS, default="python",
                        help="python: samedge's backends inside Triton's Python backend (any Triton, the wheel's "
                             "too); onnxruntime / tensorrt: the models on Triton's own backends (a full Triton)")
    parser.add_argument("--overwrite", action="store_true", help="replace the version if it exists")
    args = parser.parse_args(argv)
    if args.version < 1 or args.cache_megabytes < 1:
        parser.error("--version and --cache-megabytes must be positive")
    try:
        out = write_repository(args.bundle, args.out, args.version, args.name, args.backend, args.gpu,
                               args.cache_megabytes, args.overwrite, flavour=args.flavour)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Triton model repository written to {out}: serve it with python -m runtime.serving.server {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
