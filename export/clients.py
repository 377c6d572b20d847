"""What the tools people already use need from a bundle: AnyLabeling, samexporter.

SAM 1: encoder_preprocess.onnx is the image encoder as those two feed it.
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

config.yaml is an AnyLabeling custom model ("Load Custom Model" opens it). For SAM 1, AnyLabeling
and samexporter both assume a 1024-px model (they letterbox into a 1024 frame and scale prompts
to it), so a bundle of another size gets no config.yaml and its manifest says why.

MobileSAM (compress/families/mobile_sam.py) takes SAM 1's files as they are: its decoder is SAM 1's,
and AnyLabeling's own MobileSAM release (models.yaml: mobile_sam_20230629, type segment_anything) is
such an encoder / decoder pair, which its SAM 1 path runs; samexporter's SAM 1 path likewise.

SAM 2 (config.family "sam2") needs no extra graph: encoder.onnx and decoder.onnx are
samexporter's SAM 2 files, which its SAM2 path (`--sam_variant sam2`) and AnyLabeling's
SegmentAnything2ONNX feed directly: they stretch the image to the encoder's own S x S with
cv2 and normalise it themselves, and size mask_input from that S (S / 4 = the bundle's
low-res size), so any size works. config.yaml is then `type: segment_anything` pointing at
encoder.onnx; AnyLabeling picks its SAM 2 path from the decoder's `high_res_feats_0` input.
AnyLabeling 0.4.43 swaps red and blue before that encoder (it passes its RGB image to code
written for samexporter's cv2.imread BGR), for every SAM 2 model it runs: the manifest says so.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compress.families import family_of
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


def write_client_files(root: Path, name: str, config) -> dict | None:
    """The clients' files beside root's encoder.onnx and decoder.onnx, in the client format the model's
    family names (ModelFamily.client_format); returns the manifest's `clients` section (None: the family
    has no clients' format)."""
    client_format = family_of(config).client_format
    if client_format is None:
        return None
    try:
        writer = CLIENT_FILES[client_format]
    except KeyError:
        raise ValueError(f"no client files of format {client_format!r}; export/clients.py writes "
                         f"{sorted(CLIENT_FILES)} (build with --no-clients)") from None
    return writer(root, name, config)


# The engines serve samedge's Session, which preprocesses on the host; the clients run ONNX Runtime.
NO_TENSORRT = ("none: AnyLabeling and samexporter run ONNX Runtime on the ONNX files; samedge's Session "
               "preprocesses on the host before its engines")


def _sam_client_files(root: Path, name: str, config) -> dict:
    """SAM 1: the preprocess encoder and, for 1024-px models, AnyLabeling's config.yaml."""
    img_size, low_res_size, pixel_mean, pixel_std = (config.img_size, config.low_res_size, config.pixel_mean,
                                                     config.pixel_std)
    write_preprocess_encoder(root / ENCODER_FILE, root / PREPROCESS_ENCODER_FILE, pixel_mean, pixel_std)
    section = {
        "preprocess_encoder": PREPROCESS_ENCODER_FILE,
        "preprocess_input": f"{PREPROCESS_INPUT} [{HEIGHT}, {WIDTH}, 3] float32 RGB 0..255, longest side resized "
                            f"to {img_size} (H, W <= {img_size}); normalised and zero-padded inside",
        "tensorrt": NO_TENSORRT,
        "anylabeling_config": None,
    }
    if (img_size, low_res_size) != (CLIENTS_IMG_SIZE, CLIENTS_LOW_RES_SIZE):
        section["note"] = (f"AnyLabeling and samexporter assume {CLIENTS_IMG_SIZE}-px models with "
                           f"{CLIENTS_LOW_RES_SIZE}-px mask inputs; this one takes {img_size} px and "
                           f"{low_res_size}-px mask inputs, so use samedge's Session or runtime.predict")
        return section
    # AnyLabeling's SAM 1 path feeds only the rank-3 image. The sizes: required keys that AnyLabeling
    # 0.4.43 reads and does not use (it letterboxes into 684 x 1024).
    _write_anylabeling_config(root / ANYLABELING_CONFIG_FILE, name, PREPROCESS_ENCODER_FILE,
                              {"input_size": CLIENTS_IMG_SIZE, "max_width": CLIENTS_IMG_SIZE, "max_height": 684})
    section["anylabeling_config"] = ANYLABELING_CONFIG_FILE
    return section


def _sam2_client_files(root: Path, name: str, config) -> dict:
    """SAM 2: AnyLabeling's config.yaml, at any size (both clients read S from encoder.onnx)."""
    size = config.img_size
    # The sizes: required keys its SAM 2 path reads and does not use; its own SAM 2 configs give S for all three.
    _write_anylabeling_config(root / ANYLABELING_CONFIG_FILE, name, ENCODER_FILE,
                              {"input_size": size, "max_width": size, "max_height": size})
    return {
        "encoder": f"{ENCODER_FILE}: samexporter's SAM 2 encoder as it is (image [1, 3, {size}, {size}] float32, "
                   "RGB stretched to the square and normalised with ImageNet statistics on 0..1 by the client)",
        "decoder": f"{DECODER_FILE}: samexporter's SAM 2 decoder as it is (3 multimask low-res logit maps, "
                   f"{config.low_res_size} px; the client upscales the best-scored one)",
        "samexporter": f"python -m samexporter.inference --sam_variant sam2 --encoder_model {ENCODER_FILE} "
                       f"--decoder_model {DECODER_FILE} --image IMAGE --prompt PROMPT.json --output OUT.png",
        "tensorrt": NO_TENSORRT,
        "anylabeling_config": ANYLABELING_CONFIG_FILE,
        "note": "AnyLabeling 0.4.43 swaps red and blue before the encoder for every SAM 2 model (its RGB image "
                "goes through samexporter's BGR-to-RGB conversion), so its masks are the model's for the "
                "colour-swapped photo; samexporter and samedge's Session feed RGB. Both clients resize with cv2 "
                "(bilinear, no antialiasing) where Session follows sam2's antialiased resize, so their masks "
                "differ from Session's near edges",
    }


CLIENT_FILES = {"sam": _sam_client_files, "sam2": _sam2_client_files}  # ModelFamily.client_format -> writer


def _write_anylabeling_config(path: Path, name: str, encoder: str, sizes: dict) -> None:
    """config.yaml: an AnyLabeling custom model of `encoder` and decoder.onnx (AnyLabeling picks its SAM 1
    or SAM 2 path from the decoder's inputs)."""
    keys = {"type": "segment_anything", "name": f"samedge-{name}", "display_name": f"samedge {name}",
            "encoder_model_path": encoder, "decoder_model_path": DECODER_FILE, **sizes}
    # JSON strings are YAML scalars: no YAML library for eight keys.
    lines = ["# AnyLabeling: Auto Labeling > Load Custom Model > this file (paths are relative to it)"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in keys.items()]
    path.write_text("\n".join(lines) + "\n")
