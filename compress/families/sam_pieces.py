"""What each of a SAM 1 bundle's ONNX files computes, as torch modules (export/ traces them).

- encoder.onnx: `image_encoder`, its global attention traced in bands (sam_attention.py);
- decoder.onnx / decoder_single.onnx: segment_anything's own `SamOnnxModel`, the official ONNX
  decoder's signature, with a crop that follows `orig_im_size` at run time;
- decoder_batch.onnx: N prompt sets on one image per call, low-res masks only (`BatchDecoder`).

The batch decoder ends at the low-res masks for two reasons: the runtime upscales only the masks
a caller asks for (64 prompts' masks at a 12 MP photo's size are 768 MB of booleans), and TensorRT
rejects the official decoder's float `orig_im_size` shape tensor (docs/design.md). Upstream's
MaskDecoder repeats the image embedding once per prompt set with `repeat_interleave`, which exports
as a OneHot that TensorRT rejects; broadcasting the single embedding against the N prompt sets
computes the same thing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.utils.onnx import SamOnnxModel

from runtime.signature import BATCH_DECODER_INPUTS, BATCH_DECODER_OUTPUTS, DECODER_INPUTS, DECODER_OUTPUTS

from .registry import Piece
from .sam_attention import banded_global_attention

ENCODER_INPUT = "image"
ENCODER_OUTPUT = "image_embeddings"
BATCH_DYNAMIC_AXES = {"point_coords": {0: "num_prompts", 1: "num_points"},
                      "point_labels": {0: "num_prompts", 1: "num_points"}, "mask_input": {0: "num_prompts"},
                      "has_mask_input": {0: "num_prompts"}, "iou_predictions": {0: "num_prompts"},
                      "low_res_masks": {0: "num_prompts"}}


def decoder_dummy_inputs(model) -> dict:
    """Example inputs in the official decoder's format (also used by tests)."""
    embed_dim = model.prompt_encoder.embed_dim
    grid = model.prompt_encoder.image_embedding_size
    size = model.image_encoder.img_size
    generator = torch.Generator().manual_seed(0)
    return {
        "image_embeddings": torch.randn(1, embed_dim, *grid, generator=generator),
        "point_coords": torch.randint(0, size, (1, 5, 2), generator=generator).float(),
        "point_labels": torch.randint(0, 4, (1, 5), generator=generator).float(),
        "mask_input": torch.randn(1, 1, 4 * grid[0], 4 * grid[1], generator=generator),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor([float(size + size // 2), float(size * 2)]),
    }


class DecoderForExport(SamOnnxModel):
    """segment_anything's SamOnnxModel, with a crop that follows `orig_im_size` at run time.

    Upstream crops with `int(prepadded_size[0])`; the TorchScript tracer freezes that to the
    example input's size, so every other image size would be cropped wrongly. Slicing with the
    tensors themselves keeps the crop in the graph."""

    def mask_postprocessing(self, masks, orig_im_size):
        masks = F.interpolate(masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        prepadded = self.resize_longest_image_size(orig_im_size, self.img_size)
        masks = masks[..., : prepadded[0], : prepadded[1]]
        height, width = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)


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


def batch_dummy_inputs(model, prompts: int = 3) -> tuple:
    """Example inputs in BATCH_DECODER_INPUTS order: `prompts` sets of the official example."""
    single = decoder_dummy_inputs(model)
    repeat = {name: single[name].expand(prompts, *single[name].shape[1:]).clone() for name in
              ("point_coords", "point_labels", "mask_input")}
    return (single["image_embeddings"], *repeat.values(), torch.ones(prompts))


def encoder_piece(model, file: str = "encoder.onnx") -> Piece:
    """[1, 3, S, S] normalised, padded pixels -> image embeddings [1, C, S/16, S/16]."""
    encoder = model.image_encoder
    size = encoder.img_size
    grid = size // encoder.patch_embed.proj.stride[0]
    return Piece(file, encoder, (torch.zeros(1, 3, size, size),), (ENCODER_INPUT,), (ENCODER_OUTPUT,),
                 tracing=lambda: banded_global_attention(encoder),
                 output_shapes={ENCODER_OUTPUT: (1, model.prompt_encoder.embed_dim, grid, grid)}, role="encoder")


def decoder_piece(model, file: str, return_single_mask: bool = False) -> Piece:
    """The official decoder: all M = 4 masks (mask 0 the single-mask answer), or the single-mask variant."""
    return Piece(file, DecoderForExport(model, return_single_mask=return_single_mask).eval(),
                 tuple(decoder_dummy_inputs(model).values()), DECODER_INPUTS, DECODER_OUTPUTS,
                 {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
                 role="decoder" if not return_single_mask else "client")


def batch_decoder_piece(model, file: str = "decoder_batch.onnx") -> Piece:
    return Piece(file, BatchDecoder(model).eval(), batch_dummy_inputs(model), BATCH_DECODER_INPUTS,
                 BATCH_DECODER_OUTPUTS, BATCH_DYNAMIC_AXES, role="decoder")
