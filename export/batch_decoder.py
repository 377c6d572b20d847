"""The SAM 1 batch decoder (`decoder_batch.onnx`, and the TensorRT decoder): N prompt sets on one
image per call, masks at low resolution (compress/families/sam_pieces.py says what it computes):

    image_embeddings [1, C, h, w]   point_coords [N, P, 2]   point_labels [N, P]
    mask_input [N, 1, 4h, 4w]       has_mask_input [N]
    -> iou_predictions [N, 4], low_res_masks [N, 4, 4h, 4w]
"""

from __future__ import annotations

from pathlib import Path

from compress.families.sam_pieces import BATCH_DYNAMIC_AXES as DYNAMIC_AXES  # noqa: F401 (TensorRT's profile)
from compress.families.sam_pieces import BatchDecoder, batch_decoder_piece  # noqa: F401
from compress.families.sam_pieces import batch_dummy_inputs as dummy_inputs  # noqa: F401

from .onnx_export import coded_tensors, export_piece


def export_batch_decoder(model, path, coded: bool = True) -> Path:
    """Write the batch decoder of `model` to `path` (`coded`: Birkhoff tensors as HyperTensor nodes)."""
    return export_piece(batch_decoder_piece(model, Path(path).name), path, coded_tensors(model) if coded else None)
