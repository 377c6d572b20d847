"""The MobileSAM family: SAM 1's prompt encoder and mask decoder behind a TinyViT-5M image encoder
(the `mobile_sam` package's `sam_model_registry["vit_t"]`, the official `mobile_sam.pt`).

Built from the `mobile_sam` package's own classes, so the reference is upstream's `SamPredictor` on
the same modules. Only the image encoder differs from SAM 1: its decoder is segment_anything's, so a
bundle holds SAM 1's decoder files (the official SAM ONNX decoder's signature, compress/families/
sam_pieces.py), its manifest is SAM 1's, and AnyLabeling and samexporter open it as they open SAM 1
(their MobileSAM release is a SAM 1 encoder/decoder pair: client format "sam").

    encoder.onnx   image [1, 3, S, S] (normalised, zero-padded) -> image_embeddings [1, 256, S/16, S/16]

Three things about upstream's TinyViT the family takes care of:
- its attention caches the bias table of each window (`ab`) when the model is put in eval mode,
  so weights loaded, perturbed or Birkhoff-decoded after `.eval()` would leave a stale table (upstream's
  own builder loads the checkpoint after `.eval()`, and its README calls `.eval()` again). Here the
  table is re-read from `attention_biases` before every forward (`fresh_bias_table`);
- `forward_features` reshapes the last stage to a 64 x 64 grid, 1024 px's; other sizes get the
  same method with the grid of their own size (the test size, 256 px);
- its BatchNorm layers count training steps in int64 `num_batches_tracked` buffers, which eval mode
  never reads and samedge's checkpoints (floating-point tensors only) refuse: the model counts in
  float32 [1], and an official state dict's counters are read so on detection.
"""

from __future__ import annotations

import math
import types
import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config_data import ConfigData
from ..errors import CheckpointError
from .batch_norm import float_step_counters, float_step_counters_in_state
from .registry import ModelFamily, NumpyPrompts, Piece, register
from .sam import SAM
from .sam_pieces import ENCODER_INPUT, ENCODER_OUTPUT, batch_decoder_piece, decoder_piece

# SAM 1's pixel statistics (mobile_sam's build_sam_vit_t uses them too).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
ENCODER_STRIDE = 16  # patch embedding 4, then two stride-2 merges (the last merge keeps the grid)
PROMPT_EMBED_DIM = 256
OFFICIAL_IMG_SIZE = 1024
# The key only TinyViT's patch embedding has (SAM 1's ViT has image_encoder.patch_embed.proj).
TINY_VIT_KEY = "image_encoder.patch_embed.seq.0.c.weight"
# Light HQ-SAM (segment_anything_hq's vit_tiny) has the same TinyViT and an HQ decoder: SAM-HQ's kind.
HQ_DECODER_KEY = "mask_decoder.hf_token.weight"


@dataclass(frozen=True)
class MobileSamConfig(ConfigData):
    """A MobileSAM architecture as data: TinyViT's four stages and the image size."""

    name: str
    img_size: int = OFFICIAL_IMG_SIZE
    embed_dims: tuple[int, ...] = (64, 128, 160, 320)
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (2, 4, 5, 10)  # stage 0 is convolutional: its count is unused
    window_sizes: tuple[int, ...] = (7, 7, 14, 7)
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN
    pixel_std: tuple[float, float, float] = PIXEL_STD

    family: ClassVar[str] = "mobile_sam"

    @property
    def embedding_size(self) -> int:
        return self.img_size // ENCODER_STRIDE

    @property
    def low_res_size(self) -> int:
        return 4 * self.embedding_size

    def widths(self) -> dict:
        """What a state dict's shapes tell of this architecture (all but the image size)."""
        return {"embed_dims": self.embed_dims, "depths": self.depths, "num_heads": self.num_heads[1:],
                "window_sizes": self.window_sizes[1:]}


MODEL_TYPES = {
    "mobile_sam": MobileSamConfig("mobile_sam"),  # the official mobile_sam.pt
    # The real TinyViT-5M at 256 px (a 16 x 16 embedding grid): every stage still pads its windows,
    # as at 1024 px, and an image takes about 0.1 s; for tests.
    "mobile_sam_256": MobileSamConfig("mobile_sam_256", img_size=256),
}


def _mobile_sam_modeling():
    """mobile_sam.modeling, imported on first use: importing it registers TinyViT's timm models again,
    with warnings about timm's moved modules and the overwritten names, which say nothing to a user."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mobile_sam import modeling
    return modeling


def _sized_forward_features(encoder, x):
    """TinyViT.forward_features with the last stage's grid of `encoder`'s image size, not 1024 px's 64."""
    x = encoder.patch_embed(x)
    for layer in encoder.layers:
        x = layer(x)  # the last three stages: tokens [B, h * w, C]
    batch, _, channels = x.shape
    grid = encoder.img_size // ENCODER_STRIDE
    return encoder.neck(x.view(batch, grid, grid, channels).permute(0, 3, 1, 2))  # [B, 256, grid, grid]


def fresh_bias_table(attention, args):
    """Before each forward: the bias table eval mode reads (`ab`), from the weights as they are now."""
    if not attention.training:
        attention.ab = attention.attention_biases[:, attention.attention_bias_idxs]  # [heads, N, N]


def build_tiny_vit(config: MobileSamConfig) -> nn.Module:
    modeling = _mobile_sam_modeling()
    encoder = modeling.TinyViT(
        img_size=config.img_size, in_chans=3, num_classes=1000, embed_dims=list(config.embed_dims),
        depths=list(config.depths), num_heads=list(config.num_heads), window_sizes=list(config.window_sizes),
        mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0,
        local_conv_size=3, layer_lr_decay=0.8)
    if config.img_size != OFFICIAL_IMG_SIZE:
        encoder.forward_features = types.MethodType(_sized_forward_features, encoder)
    for module in encoder.modules():
        if isinstance(module, modeling.tiny_vit_sam.Attention):
            module.register_forward_pre_hook(fresh_bias_table)
    float_step_counters(encoder)  # compress/families/batch_norm.py
    return encoder


def build_mobile_sam(config: MobileSamConfig) -> nn.Module:
    """mobile_sam's Sam as build_sam_vit_t builds it, at `config`'s sizes (eval mode, `.config` set)."""
    modeling = _mobile_sam_modeling()
    grid = config.embedding_size
    model = modeling.Sam(
        image_encoder=build_tiny_vit(config),
        prompt_encoder=modeling.PromptEncoder(embed_dim=PROMPT_EMBED_DIM, image_embedding_size=(grid, grid),
                                              input_image_size=(config.img_size, config.img_size), mask_in_chans=16),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=3,
            transformer=modeling.TwoWayTransformer(depth=2, embedding_dim=PROMPT_EMBED_DIM, mlp_dim=2048, num_heads=8),
            transformer_dim=PROMPT_EMBED_DIM, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=list(config.pixel_mean), pixel_std=list(config.pixel_std))
    model.eval()
    model.config = config
    return model


def perturb(model: nn.Module, seed: int) -> None:
    """Seeded weights in which every part of TinyViT counts. Upstream starts its linear layers at
    std 0.02, so an attention or MLP branch adds about 1e-3 of the residual it joins (a wrong bias
    table or head split would change the embedding by less than parity's tolerance), its attention
    biases at 0, its BatchNorms at identity statistics and the last BatchNorm of every MBConv at
    weight 0 (the block a no-op). Here the encoder's linear layers keep their outputs' scale
    (std 1 / sqrt(fan in)), the biases are of the attention logits' order, every BatchNorm has
    statistics and weights of its own, and every other parameter gets 10 % noise (LayerNorms start
    at 1 and 0, and the decoder's layers alike)."""
    generator = torch.Generator().manual_seed(seed)

    def noise(tensor, scale):
        return torch.randn(tensor.shape, generator=generator) * scale

    with torch.no_grad():
        chosen = set()
        for module in model.image_encoder.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(noise(module.weight, module.in_features ** -0.5))
                chosen.add(id(module.weight))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(1 + noise(module.weight, 0.2))
                module.running_mean.copy_(noise(module.running_mean, 0.1))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
                chosen.add(id(module.weight))
            elif hasattr(module, "attention_biases"):
                module.attention_biases.copy_(noise(module.attention_biases, 1.0))  # [heads, w * w]
                chosen.add(id(module.attention_biases))
        for parameter in model.parameters():
            if id(parameter) not in chosen:
                spread = float(parameter.std()) if parameter.numel() > 1 else 0.0
                parameter.add_(noise(parameter, 0.1 * spread if spread > 0 else 0.1))


def _count(state: dict, prefix: str) -> int:
    """How many numbered submodules `prefix.N.` the state dict holds."""
    return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})


def read_widths(state: dict) -> dict:
    """A MobileSAM state dict's TinyViT widths (MobileSamConfig.widths), from its tensors' shapes."""
    try:
        stages = _count(state, "image_encoder.layers.")
        embed_dims = [state["image_encoder.patch_embed.seq.2.c.weight"].shape[0]]  # [C0, C0 / 2, 3, 3]
        embed_dims += [state[f"image_encoder.layers.{i}.downsample.conv1.c.weight"].shape[0]  # [C_i+1, C_i, 1, 1]
                       for i in range(stages - 1)]
        depths = [_count(state, f"image_encoder.layers.{i}.blocks.") for i in range(stages)]
        # Attention stages: biases [heads, distinct offsets in a w x w window] = [heads, w * w].
        biases = [state[f"image_encoder.layers.{i}.blocks.0.attn.attention_biases"].shape for i in range(1, stages)]
    except (KeyError, IndexError) as err:
        raise CheckpointError(f"a TinyViT (MobileSAM) state dict without {err}; the file is damaged or of "
                              "another TinyViT layout") from None
    return {"embed_dims": tuple(embed_dims), "depths": tuple(depths), "num_heads": tuple(s[0] for s in biases),
            "window_sizes": tuple(math.isqrt(s[1]) for s in biases)}


class MobileSamFamily(ModelFamily):
    name = "mobile_sam"
    config_class = MobileSamConfig
    model_types = MODEL_TYPES
    compressions = ("birkhoff",)
    client_format = "sam"  # SAM 1's files: the preprocess encoder, and config.yaml at 1024 px

    def build(self, config, seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        model = build_mobile_sam(config)
        if seed is not None:
            perturb(model, seed)
        return model

    def detect(self, state, model_type=None, name="checkpoint"):
        if TINY_VIT_KEY not in state or HQ_DECODER_KEY in state:
            return None  # not a TinyViT, or Light HQ-SAM's
        if model_type is not None and model_type not in MODEL_TYPES:
            raise CheckpointError(f"the file holds a MobileSAM (TinyViT) model, but model type {model_type} was "
                                  f"asked for; pass --model-type mobile_sam (or one of {sorted(MODEL_TYPES)})")
        widths = read_widths(state)
        config = MODEL_TYPES[model_type or "mobile_sam"]  # the image size is in no tensor: 1024, or the type's
        if widths != config.widths():
            found = ", ".join(f"{key} {list(value)}" for key, value in widths.items())
            raise CheckpointError(f"a TinyViT state dict ({found}) that is not MobileSAM's TinyViT-5M "
                                  f"({', '.join(f'{k} {list(v)}' for k, v in config.widths().items())}); "
                                  "save other widths with compress.save_checkpoint(model, path, config=...)")
        float_step_counters_in_state(state)  # before the loader's check refuses integer tensors
        return config

    def refusal(self, compression):
        if "slimsam" in compression:
            return (f"--compress {compression}: SlimSAM prunes SAM 1's ViT image encoder, and MobileSAM's is a "
                    "TinyViT; for MobileSAM use --compress birkhoff, or quantise the bundle "
                    "(python -m export.quantize BUNDLE --method int8)")
        return super().refusal(compression)

    def pieces(self, model) -> list[Piece]:
        size = model.image_encoder.img_size
        grid = size // ENCODER_STRIDE
        # TinyViT has no global attention (windows of 7 and 14): no banded tracing, unlike SAM 1's ViT.
        encoder = Piece("encoder.onnx", model.image_encoder, (torch.zeros(1, 3, size, size),), (ENCODER_INPUT,),
                        (ENCODER_OUTPUT,), output_shapes={ENCODER_OUTPUT: (1, PROMPT_EMBED_DIM, grid, grid)},
                        role="encoder")
        return [encoder, decoder_piece(model, "decoder.onnx"),
                decoder_piece(model, "decoder_single.onnx", return_single_mask=True), batch_decoder_piece(model)]

    def manifest(self, config) -> dict:
        return SAM.manifest(config)  # SAM 1's pre-processing and decoder signature

    def reference(self, model):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mobile_sam import SamPredictor

        return NumpyPrompts(SamPredictor(model))

    def reference_mask_generator(self, model, **settings):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mobile_sam import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator(model, **settings)


MOBILE_SAM = register(MobileSamFamily())
