"""What the tools people already use need from a bundle: AnyLabeling, samexporter.

encoder_preprocess.onnx is the image encoder as those two feed it.
Those clients (and samexporter's `--use-preprocess` encoders) give the encoder a rank-3
image, [H, W, 3] float32 RGB in 0..255 already resized so that its longest side is the
model's size, and leave normalising and padding to the graph. This file is encoder.onnx
with those two steps in front, in the float32 operations of runtime.transforms.preprocess
(subtract the mean, divide by the std, zero-pad bottom and right), so both files give the
same embedding for the same resized image.

Written from the finished encoder.onnx rather than by a second torch export: the graph
behind the preprocessing, Birkhoff's HyperLinear nodes included, is encoder.onnx's own,
and export time does not double. Its weights are a second copy on disk: each file stays
whole on its own, as these clients expect of an encoder.

config.yaml is an AnyLabeling custom model ("Load Custom Model" opens it). AnyLabeling and
samexporter both assume a 1024-px model (they letterbox into a 1024 frame and scale prompts
to it), so a bundle of another size gets no config.yaml and its manifest says why.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.bundle import ANYLABELING_CONFIG_FILE, DECODER_FILE, ENCODER_FILE, PREPROCESS_ENCODER_FILE

from .onnx_export import save_checked

# The frame AnyLabeling and samexporter scale every image and prompt to, and the mask_input they feed.
CLIENTS_IMG_SIZE, CLIENTS_LOW_RES_SIZE = 1024, 256

PREPROCESS_INPUT = "input_image"  # samexporter's name for the rank-3 input
HEIGHT, WIDTH = "image_height", "image_width"


def write_preprocess_encoder(encoder: Path, out: Path, pixel_mean, pixel_std) -> Path:
    """encoder.onnx ([1, 3, S, S] normalised, padded) -> `out` taking [H, W, 3] with H, W <= S."""
    model = onnx.load(str(encoder), load_external_data=True)
    graph = model.graph
    (image,) = graph.input
    size = image.type.tensor_type.shape.dim[-1].dim_value
    prefix = "preprocess/"
    constants = {
        f"{prefix}mean": np.asarray(pixel_mean, np.float32),  # [3], broadcast over H, W
        f"{prefix}std": np.asarray(pixel_std, np.float32),
        f"{prefix}frame": np.array([size, size, 3], np.int64),
        f"{prefix}zeros": np.zeros(3, np.int64),
        f"{prefix}input_shape": np.array([1, 3, size, size], np.int64),
    }
    nodes = [
        helper.make_node("Sub", [PREPROCESS_INPUT, f"{prefix}mean"], [f"{prefix}centred"]),
        helper.make_node("Div", [f"{prefix}centred", f"{prefix}std"], [f"{prefix}normalised"]),  # [H, W, 3]
        # Pads of [S - H, S - W, 0] after each axis; Max: a larger image gets none rather than
        # negative ones (which crop), and the Reshape below refuses it.
        helper.make_node("Shape", [PREPROCESS_INPUT], [f"{prefix}shape"]),
        helper.make_node("Sub", [f"{prefix}frame", f"{prefix}shape"], [f"{prefix}missing"]),
        helper.make_node("Max", [f"{prefix}missing", f"{prefix}zeros"], [f"{prefix}after"]),
        helper.make_node("Concat", [f"{prefix}zeros", f"{prefix}after"], [f"{prefix}pads"], axis=0),
        helper.make_node("Pad", [f"{prefix}normalised", f"{prefix}pads"], [f"{prefix}padded"]),  # [S, S, 3]
        helper.make_node("Transpose", [f"{prefix}padded"], [f"{prefix}chw"], perm=[2, 0, 1]),
        # To the static [1, 3, S, S]: refuses any image that was larger than S (the patch
        # embedding would silently drop up to a patch of extra rows), and gives the graph behind
        # its static shapes back.
        helper.make_node("Reshape", [f"{prefix}chw", f"{prefix}input_shape"], [image.name]),
    ]
    for index, node in enumerate(nodes):
        node.name = f"{prefix}{node.op_type}_{index}"
    rank3 = helper.make_tensor_value_info(PREPROCESS_INPUT, TensorProto.FLOAT, [HEIGHT, WIDTH, 3])
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    graph.input.remove(image)
    graph.input.insert(0, rank3)
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    with tempfile.TemporaryDirectory(dir=Path(out).parent) as work:
        return save_checked(model, Path(out), Path(work) / "staged")


def write_client_files(root: Path, name: str, img_size: int, low_res_size: int, pixel_mean, pixel_std) -> dict:
    """The preprocess encoder beside root/encoder.onnx and, for 1024-px models, AnyLabeling's
    config.yaml; returns the manifest's `clients` section."""
    write_preprocess_encoder(root / ENCODER_FILE, root / PREPROCESS_ENCODER_FILE, pixel_mean, pixel_std)
    section = {
        "preprocess_encoder": PREPROCESS_ENCODER_FILE,
        "preprocess_input": f"{PREPROCESS_INPUT} [{HEIGHT}, {WIDTH}, 3] float32 RGB 0..255, longest side resized "
                            f"to {img_size} (H, W <= {img_size}); normalised and zero-padded inside",
        # The engines serve samedge's Session, which preprocesses on the host; the clients run ONNX Runtime.
        "tensorrt": "none: AnyLabeling and samexporter run ONNX Runtime on the ONNX files; samedge's Session "
                    "preprocesses on the host before its engines",
        "anylabeling_config": None,
    }
    if (img_size, low_res_size) != (CLIENTS_IMG_SIZE, CLIENTS_LOW_RES_SIZE):
        section["note"] = (f"AnyLabeling and samexporter assume {CLIENTS_IMG_SIZE}-px models with "
                           f"{CLIENTS_LOW_RES_SIZE}-px mask inputs; this one takes {img_size} px and "
                           f"{low_res_size}-px mask inputs, so use samedge's Session or runtime.predict")
        return section
    _write_anylabeling_config(root / ANYLABELING_CONFIG_FILE, name)
    section["anylabeling_config"] = ANYLABELING_CONFIG_FILE
    return section


def _write_anylabeling_config(path: Path, name: str) -> None:
    # JSON strings are YAML scalars: no YAML library for seven keys.
    keys = {
        "type": "segment_anything",
        "name": f"samedge-{name}",
        "display_name": f"samedge {name}",
        "encoder_model_path": PREPROCESS_ENCODER_FILE,  # AnyLabeling feeds only the rank-3 image
        "decoder_model_path": DECODER_FILE,
        # Required keys that AnyLabeling 0.4.43 reads and does not use (it letterboxes into 684 x 1024).
        "input_size": CLIENTS_IMG_SIZE,
        "max_width": CLIENTS_IMG_SIZE,
        "max_height": 684,
    }
    lines = ["# AnyLabeling: Auto Labeling > Load Custom Model > this file (paths are relative to it)"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in keys.items()]
    path.write_text("\n".join(lines) + "\n")
