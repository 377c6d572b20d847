"""The native flavour of a Triton repository: the bundle's models on Triton's own onnxruntime or
tensorrt backends (a GPU box with a full Triton: NGC containers, Jetson), the samedge model in front.

    python -m export.triton bundles/vit_b-desktop --out repo --flavour onnxruntime --gpu
    python -m export.triton bundles/vit_b-desktop --out repo --flavour tensorrt --gpu   # engines built first

    <name>_encoder         encoder.onnx (Birkhoff codes decoded to dense weights: Triton's onnxruntime has
                           no samedge nodes) or tensorrt/encoder.engine
    <name>_batch_decoder   decoder_batch.onnx or tensorrt/decoder.engine
    <name>_decoder         SAM 1's official decoder.onnx (onnxruntime in both flavours)
    <name>                 the Python-backend samedge model (engine "native"): the protocol, the embeddings
                           kept, prompt requests merged; it calls the three by business-logic scripting

Clients see the same model and protocol as the python flavour. TensorRT engines of Birkhoff bundles
hold the HyperLinear plugin: start Triton with the bundle's plugin library,
`--backend-config=tensorrt,plugins=<repo>/<name>_encoder/<version>/libhyperlinear_plugin.so`.
The wheel's tritonserver has neither backend, so these models are written and checked here (configs
parsed by Triton's own schema, inputs and outputs against the ONNX files), not served.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, NamedTuple

import onnx
from onnx import numpy_helper

from runtime.bundle import (BATCH_DECODER_FILE, DECODER_FILE, ENCODER_FILE, ENGINE_FILES, TENSORRT_FOLDER,
                            BundleError)
from runtime.decoded_graph import decode_all, has_samedge_nodes
from runtime.serving.protocol import NATIVE_SUFFIXES

FLAVOURS = ("python", "onnxruntime", "tensorrt")
PLUGIN_LIBRARY = "libhyperlinear_plugin.so"


class ModelFolder(NamedTuple):
    name: str
    config: object  # a tritonclient ModelConfig message
    fill: Callable[[Path], None]  # writes a version folder's files


def native_models(bundle, name: str, flavour: str, gpu: bool, signature) -> list[ModelFolder]:
    """The Triton models holding `bundle`'s networks; `signature(path)`: an ONNX file's inputs and outputs."""
    from tritonclient.grpc import model_config_pb2 as pb

    encoder_name, batch_name, decoder_name = (name + suffix for suffix in NATIVE_SUFFIXES)
    files = [(encoder_name, ENCODER_FILE, 0), (batch_name, BATCH_DECODER_FILE, 1)]
    if bundle.official_decoder:
        files.append((decoder_name, DECODER_FILE, None))
    engines = None
    if flavour == "tensorrt":
        engines = [bundle.root / TENSORRT_FOLDER / engine for engine in ENGINE_FILES]
        if not all(engine.is_file() for engine in engines):
            raise BundleError(f"{bundle.root} has no TensorRT engines: build them on the GPU that will serve them "
                              f"(bash {bundle.root}/{TENSORRT_FOLDER}/build_engines.sh), or use --flavour onnxruntime")
    models = []
    for model_name, file, engine in files:
        config = pb.ModelConfig(name=model_name, max_batch_size=0)  # the embedding [1, ...] has no batch axis
        config.instance_group.add(count=1, kind=pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU,
                                  gpus=[0] if gpu else [])
        if engines is not None and engine is not None:
            # Inputs and outputs from the plan itself (Triton's auto-complete): its profile's shapes.
            config.platform = "tensorrt_plan"
            models.append(ModelFolder(model_name, config, _engine_writer(engines[engine], bundle)))
            continue
        config.platform = "onnxruntime_onnx"
        found = signature(bundle.root / file)
        for where, tensors in ((config.input, found["inputs"]), (config.output, found["outputs"])):
            for tensor_name, dims in tensors.items():
                where.add(name=tensor_name, data_type=pb.TYPE_FP32, dims=dims)
        models.append(ModelFolder(model_name, config, _onnx_writer(bundle.root / file)))
    return models


def _onnx_writer(source: Path):
    def fill(folder: Path) -> None:
        """model.onnx with its weights beside it (model.onnx.data), samedge nodes decoded."""
        model = onnx.load(source, load_external_data=True)
        if has_samedge_nodes(model):
            model, weights = decode_all(model)
            for tensor in model.graph.initializer:
                if tensor.name in weights:  # decode_all leaves them as in-memory references: made real
                    tensor.CopyFrom(numpy_helper.from_array(weights[tensor.name], tensor.name))
        onnx.save(model, folder / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx.data", size_threshold=1024)
    return fill


def _engine_writer(engine: Path, bundle):
    def fill(folder: Path) -> None:
        shutil.copy2(engine, folder / "model.plan")
        built = sorted((bundle.root / TENSORRT_FOLDER / "plugin" / "build").glob("*.so"))
        if bundle.samedge_nodes and built:
            shutil.copy2(built[0], folder / PLUGIN_LIBRARY)
    return fill
