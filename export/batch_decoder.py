"""The batch decoder: N prompt sets on one image in one call, masks at low resolution.

One graph serves two files: the bundle's `decoder_batch.onnx` (ONNX Runtime) and
`tensorrt/decoder.onnx` (TensorRT engines, batch 1 for single prompts). It takes the
official decoder's inputs with a leading prompt axis and no `orig_im_size`:

    image_embeddings [1, C, h, w]   point_coords [N, P, 2]   point_labels [N, P]
    mask_input [N, 1, 4h, 4w]       has_mask_input [N]
    -> iou_predictions [N, 4], low_res_masks [N, 4, 4h, 4w]

Two reasons it ends at the low-res masks: the runtime upscales only the masks a caller
asks for (64 prompts' masks at a 12 MP photo's size are 768 MB of booleans), and
TensorRT rejects the official decoder's float `orig_im_size` shape tensor (docs/design.md).
Upstream's MaskDecoder repeats the image embedding once per prompt set with
`repeat_interleave`, which exports as a OneHot that TensorRT rejects; broadcasting the
single embedding against the N prompt sets computes the same thing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from segment_anything.utils.onnx import SamOnnxModel

from runtime.signature import BATCH_DECODER_INPUTS, BATCH_DECODER_OUTPUTS

from .onnx_export import coded_tensors, decoder_dummy_inputs, export_module, finish_export

DYNAMIC_AXES = {"point_coords": {0: "num_prompts", 1: "num_points"}, "point_labels": {0: "num_prompts", 1: "num_points"},
                "mask_input": {0: "num_prompts"}, "has_mask_input": {0: "num_prompts"},
                "iou_predictions": {0: "num_prompts"}, "low_res_masks": {0: "num_prompts"}}


def predict_masks(mask_decoder, image_embeddings, image_pe, sparse, dense):
    """segment_anything's MaskDecoder.predict_masks for one image and N prompt sets.

    image_embeddings, image_pe [1, C, h, w]; sparse [N, T, C]; dense [N, C, h, w]."""
    output_tokens = torch.cat([mask_decoder.iou_token.weight, mask_decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1)  # [N, 1 + masks, C]
    tokens = torch.cat((output_tokens, sparse), dim=1)  # [N, 1 + masks + T, C]
    src = image_embeddings + dense  # [N, C, h, w]: the one embedding broadcast to every prompt set
    _, channels, height, width = image_embeddings.shape
    hs, src = mask_decoder.transformer(src, image_pe, tokens)  # the image positions broadcast too
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1: 1 + mask_decoder.num_mask_tokens, :]
    upscaled = mask_decoder.output_upscaling(src.transpose(1, 2).reshape(-1, channels, height, width))
    hyper_in = torch.stack([mlp(mask_tokens_out[:, i, :])
                            for i, mlp in enumerate(mask_decoder.output_hypernetworks_mlps)], dim=1)
    _, up_channels, up_height, up_width = upscaled.shape
    masks = hyper_in @ upscaled.reshape(-1, up_channels, up_height * up_width)  # [N, masks, 4h * 4w]
    return masks.reshape(-1, mask_decoder.num_mask_tokens, up_height, up_width), \
        mask_decoder.iou_prediction_head(iou_token_out)


class BatchDecoder(SamOnnxModel):
    """The official decoder's prompt embedding, for N prompt sets; all 4 masks at low resolution."""

    def __init__(self, model):
        super().__init__(model, return_single_mask=False)

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        sparse = self._embed_points(point_coords, point_labels)  # [N, P, C]
        # Upstream multiplies by has_mask_input [1]; one flag per prompt set must meet its own row.
        dense = self._embed_masks(mask_input, has_mask_input.reshape(-1, 1, 1, 1))
        masks, scores = predict_masks(self.model.mask_decoder, image_embeddings,
                                      self.model.prompt_encoder.get_dense_pe(), sparse, dense)
        return scores, masks


def dummy_inputs(model, prompts: int = 3) -> tuple:
    """Example inputs in BATCH_DECODER_INPUTS order: `prompts` sets of the official example."""
    single = decoder_dummy_inputs(model)
    repeat = {name: single[name].expand(prompts, *single[name].shape[1:]).clone() for name in
              ("point_coords", "point_labels", "mask_input")}
    return (single["image_embeddings"], *repeat.values(), torch.ones(prompts))


def export_batch_decoder(model, path, coded: bool = True) -> Path:
    """Write the batch decoder of `model` to `path` (`coded`: Birkhoff tensors as HyperTensor nodes)."""
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        exported = Path(work) / "decoder_batch.onnx"
        with torch.no_grad():
            export_module(BatchDecoder(model).eval(), dummy_inputs(model), exported, BATCH_DECODER_INPUTS,
                          BATCH_DECODER_OUTPUTS, DYNAMIC_AXES)
        finish_export(exported, path, coded_tensors(model) if coded else None)
    return path
