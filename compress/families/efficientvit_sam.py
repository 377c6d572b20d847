"""The EfficientViT-SAM family (MIT Han lab: L0, L1, L2, XL0, XL1), from the `efficientsam` package.

EfficientViT-SAM keeps SAM's prompt encoder and mask decoder and replaces the ViT image encoder
with EfficientViT: convolutions (MBConv, fused MBConv, ResBlocks, BatchNorm) and, in the last
stages, ReLU linear attention (LiteMLA: softmax-free, linear in the token count). A neck upsamples
three stages to SAM's 64 x 64 grid (bicubic), adds them, and ends in SAM's LayerNorm2d, so the
image embedding is SAM's [1, 256, 64, 64] whatever the input size.

Upstream's EfficientViTSamPredictor pre-processes as SAM does at the encoder's own size S (512 px
for the L models, 1024 for XL): the longest side resized to S with Pillow's bilinear filter, SAM's
pixel statistics, zero padding bottom/right. Prompts and masks stay in SAM's 1024-px frame: it
scales prompts, and crops the upscaled masks, with the image's 1024-px resized size. That is
runtime/geometry.py's "longest_side_prompts_1024" rule; the decoders are SAM's official ONNX
decoder with `img_size` 1024 (compress/families/sam_pieces.py).

A bundle's files are SAM 1's: encoder.onnx (image [1, 3, S, S] -> image_embeddings [1, 256, 64, 64]),
decoder.onnx / decoder_single.onnx (the official decoder) and decoder_batch.onnx.

The architectures are plain data (EfficientViTSamConfig), built with upstream's own classes as its
builders compose them (efficientsam.models.efficientvit.sam), so the reference is upstream's
predictor on the very modules exported. Upstream's model zoo sets every norm's eps to 1e-6 after
building (the weights were trained so; no state dict stores it): build does too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..config_data import ConfigData
from ..errors import CheckpointError
from .batch_norm import float_step_counters, float_step_counters_in_state
from .registry import ModelFamily, NumpyPrompts, Piece, register
from .sam_pieces import ENCODER_INPUT, ENCODER_OUTPUT, batch_decoder_piece, decoder_piece

FAMILY = "efficientvit_sam"
RESIZE = "longest_side_prompts_1024"  # runtime/geometry.py
PROMPT_FRAME = 1024  # SAM's decoder frame: build_efficientvit_sam's input_image_size and image_size[0]
EMBEDDING_SIZE = 64  # SamNeck upsamples every input to 64 x 64
EMBED_DIM = 256  # SamNeck's out_dim: SAM's prompt embedding width
NORM_EPS = 1e-6  # efficientsam.sam_model_zoo's set_norm_eps for every released model
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

# The two backbones' fixed settings (EfficientViTLargeBackbone's arguments), as upstream's builders
# pass them: "l" is efficientvit_backbone_l*'s defaults, "xl" what efficientvit_sam_xl* spell out.
BACKBONES = {
    "l": {"block_list": ("res", "fmb", "fmb", "mb", "att"), "expand_list": (1, 4, 4, 4, 6),
          "fewer_norm_list": (False, False, False, True, True), "neck_stages": ("stage4", "stage3", "stage2")},
    "xl": {"block_list": ("res", "fmb", "fmb", "fmb", "att@3", "att@3"), "expand_list": (1, 4, 4, 4, 4, 6),
           "fewer_norm_list": (False, False, False, False, True, True),
           "neck_stages": ("stage5", "stage4", "stage3")},
}


@dataclass(frozen=True)
class EfficientViTSamConfig(ConfigData):
    """An EfficientViT-SAM architecture as data."""

    name: str
    backbone: str  # "l" (5 stages, attention in the last two) or "xl" (6 stages, attention with 3x3 aggregation)
    width_list: tuple[int, ...]  # channels of each backbone stage
    depth_list: tuple[int, ...]  # blocks of each stage after its first (down-sampling) one
    neck_depth: int  # fused-MBConv blocks at the 64 x 64 grid
    neck_expand_ratio: float
    img_size: int  # the encoder's input S: 512 (L) or 1024 (XL)
    neck_width: int = 256
    qkv_dim: int = 32  # LiteMLA's per-head width
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD

    family: ClassVar[str] = FAMILY

    @property
    def embedding_size(self) -> int:
        return EMBEDDING_SIZE

    @property
    def low_res_size(self) -> int:
        return 4 * EMBEDDING_SIZE

    @property
    def layout(self) -> tuple:
        """What a state dict's shapes tell of the architecture (`read_layout`): not img_size."""
        return (self.backbone, tuple(self.width_list), tuple(self.depth_list), self.neck_depth,
                self.neck_width, int(self.neck_width * self.neck_expand_ratio))


def _official(size: str, backbone: str, widths, depths, neck_depth: int, neck_expand: float) -> EfficientViTSamConfig:
    return EfficientViTSamConfig(name=f"efficientvit_sam_{size}", backbone=backbone, width_list=widths,
                                 depth_list=depths, neck_depth=neck_depth, neck_expand_ratio=neck_expand,
                                 img_size=512 if backbone == "l" else 1024)


# efficientsam.models.efficientvit.sam's efficientvit_sam_* (tests/test_family_efficientvit_sam.py
# checks each against upstream's builder, tensor by tensor).
_L_WIDTHS = (32, 64, 128, 256, 512)
_XL_WIDTHS = (32, 64, 128, 256, 512, 1024)
OFFICIAL = {config.name: config for config in (
    _official("l0", "l", _L_WIDTHS, (1, 1, 1, 4, 4), 4, 1),
    _official("l1", "l", _L_WIDTHS, (1, 1, 1, 6, 6), 8, 1),
    _official("l2", "l", _L_WIDTHS, (1, 2, 2, 8, 8), 12, 1),
    _official("xl0", "xl", _XL_WIDTHS, (0, 1, 1, 2, 3, 3), 6, 4),
    _official("xl1", "xl", _XL_WIDTHS, (1, 2, 2, 4, 6, 6), 12, 4),
)}
MODEL_TYPES = dict(OFFICIAL)
# The L backbone at a quarter of L0's widths, one block a stage, at 256 px: every kind of block
# (LiteMLA included, 8 x 8 tokens in its last stage) and the neck's three bicubic upsamplings,
# small enough for unit tests. SAM's decoder stays as it is (256 wide).
MODEL_TYPES["efficientvit_sam_test"] = EfficientViTSamConfig(
    name="efficientvit_sam_test", backbone="l", width_list=(8, 16, 32, 64, 128), depth_list=(1, 1, 1, 1, 1),
    neck_depth=1, neck_expand_ratio=1, neck_width=32, img_size=256)


def build_efficientvit_sam_model(config: EfficientViTSamConfig):
    """Upstream's EfficientViTSam of `config`, composed as efficientvit_sam_l0 ... xl1 compose it."""
    from efficientsam.models.efficientvit.backbone import EfficientViTLargeBackbone
    from efficientsam.models.efficientvit.sam import EfficientViTSamImageEncoder, SamNeck, build_efficientvit_sam
    from efficientsam.models.nn.norm import set_norm_eps

    if config.backbone not in BACKBONES:
        raise ValueError(f"unknown EfficientViT-SAM backbone {config.backbone!r}; choose one of {sorted(BACKBONES)}")
    settings = BACKBONES[config.backbone]
    stages = len(settings["block_list"])
    if len(config.width_list) != stages or len(config.depth_list) != stages:
        raise ValueError(f"an EfficientViT-SAM {config.backbone} backbone has {stages} stages; {config.name} gives "
                         f"{len(config.width_list)} widths and {len(config.depth_list)} depths")
    backbone = EfficientViTLargeBackbone(
        width_list=list(config.width_list), depth_list=list(config.depth_list),
        block_list=list(settings["block_list"]), expand_list=list(settings["expand_list"]),
        fewer_norm_list=list(settings["fewer_norm_list"]), qkv_dim=config.qkv_dim)
    neck = SamNeck(fid_list=list(settings["neck_stages"]), in_channel_list=list(config.width_list[::-1][:3]),
                   head_width=config.neck_width, head_depth=config.neck_depth,
                   expand_ratio=config.neck_expand_ratio, middle_op="fmb", out_dim=EMBED_DIM)
    model = build_efficientvit_sam(EfficientViTSamImageEncoder(backbone, neck), config.img_size)
    set_norm_eps(model, NORM_EPS)
    # segment_anything's SamOnnxModel (the official decoder's export, and the torch backend's decoder)
    # reads the prompt frame from image_encoder.img_size; upstream's own encoder has no such attribute,
    # and its frame is 1024 px whatever the encoder's input.
    model.image_encoder.img_size = PROMPT_FRAME
    float_step_counters(model)  # compress/families/batch_norm.py
    return model


def perturb(model: nn.Module, seed: int) -> None:
    """Seeded noise on every parameter and on BatchNorm's running statistics: freshly built, every
    norm is the identity (weight 1, bias 0, mean 0, variance 1), so a norm applied twice, skipped or
    swapped with its neighbour would not show."""
    generator = torch.Generator().manual_seed(seed)

    def noise(tensor):
        return torch.randn(tensor.shape, generator=generator)

    with torch.no_grad():
        for parameter in model.parameters():
            spread = float(parameter.std()) if parameter.numel() > 1 else 0.0
            parameter.add_(noise(parameter) * (0.1 * spread if spread > 0 else 0.02))
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.add_(0.1 * noise(module.running_mean))
                module.running_var.mul_(torch.exp(0.2 * noise(module.running_var)))  # stays positive


def read_layout(state: dict) -> tuple:
    """An EfficientViT-SAM state dict's architecture from its shapes (EfficientViTSamConfig.layout)."""
    prefix = "image_encoder.backbone.stages."

    def count(key_prefix: str) -> int:
        return len({key[len(key_prefix):].split(".")[0] for key in state if key.startswith(key_prefix)})

    try:
        stages = count(prefix)
        widths = [state[f"{prefix}0.op_list.0.conv.weight"].shape[0]]  # the stem's convolution
        # Each later stage opens with a down-sampling (fused) MBConv whose point_conv gives its width.
        widths += [state[f"{prefix}{i}.op_list.0.main.point_conv.conv.weight"].shape[0] for i in range(1, stages)]
        depths = [count(f"{prefix}{i}.op_list.") - 1 for i in range(stages)]
        neck_width = state["image_encoder.neck.input_ops.0.op_list.0.conv.weight"].shape[0]
        neck_hidden = state["image_encoder.neck.middle.op_list.0.main.spatial_conv.conv.weight"].shape[0]
    except (KeyError, AttributeError, IndexError) as err:
        raise CheckpointError(f"an EfficientViT-SAM state dict without {err}: the file is incomplete") from None
    backbone = {5: "l", 6: "xl"}.get(stages, f"{stages}-stage")
    return (backbone, tuple(widths), tuple(depths), count("image_encoder.neck.middle.op_list."), neck_width,
            neck_hidden)


def _describe(layout: tuple) -> str:
    backbone, widths, depths, neck_depth, neck_width, _ = layout
    return (f"backbone {backbone}, widths {list(widths)}, depths {list(depths)}, neck {neck_depth} blocks of "
            f"{neck_width}")


class EfficientViTSamFamily(ModelFamily):
    name = FAMILY
    config_class = EfficientViTSamConfig
    model_types = MODEL_TYPES
    compressions = ("birkhoff",)
    # The official decoder's signature and files: decoder.onnx takes prompts in the 1024-px frame, as
    # AnyLabeling and samexporter give them; the L models' 512-px encoder is not theirs (the manifest's
    # clients section says so), the XL models' 1024-px one is.
    client_format = "sam"

    def build(self, config, seed=None):
        if seed is not None:
            torch.manual_seed(seed)
        model = build_efficientvit_sam_model(config)
        if seed is not None:
            perturb(model, seed)
        model.eval()
        model.config = config
        return model

    def detect(self, state, model_type=None, name="checkpoint"):
        if not ("image_encoder.backbone.stages.0.op_list.0.conv.weight" in state
                and any(key.startswith("image_encoder.neck.middle.op_list.") for key in state)):
            return None  # not an EfficientViT-SAM
        # Before check_weights sees the official file's int64 step counters (load_checkpoint runs it
        # after detect on this same dict): the one change made to `state`.
        float_step_counters_in_state(state)
        layout = read_layout(state)
        matches = [config for config in OFFICIAL.values() if config.layout == layout]
        if model_type is not None:
            asked = MODEL_TYPES.get(model_type)
            if asked is not None and asked.layout == layout:
                return asked  # e.g. an official size at another input size
            held = f"an {matches[0].name} model" if matches else f"an EfficientViT-SAM with {_describe(layout)}"
            raise CheckpointError(f"the file holds {held}, but model type {model_type} was asked for"
                                  + (f"; pass --model-type {matches[0].name}" if matches else ""))
        if not matches:
            raise CheckpointError(f"an EfficientViT-SAM state dict with {_describe(layout)} matches none of "
                                  f"{sorted(OFFICIAL)}; pass a samedge checkpoint that records its architecture")
        return matches[0]

    def refusal(self, compression):
        if "slimsam" in compression:
            return (f"--compress {compression}: SlimSAM prunes SAM 1's ViT encoder; EfficientViT-SAM's encoder is "
                    "convolutions and linear attention, which it cannot prune. Use --compress birkhoff, or "
                    "python -m export.quantize on the bundle")
        return super().refusal(compression)

    def pieces(self, model) -> list[Piece]:
        size = model.config.img_size
        encoder = Piece("encoder.onnx", model.image_encoder, (torch.zeros(1, 3, size, size),), (ENCODER_INPUT,),
                        (ENCODER_OUTPUT,), output_shapes={ENCODER_OUTPUT: (1, EMBED_DIM, EMBEDDING_SIZE,
                                                                            EMBEDDING_SIZE)}, role="encoder")
        return [encoder, decoder_piece(model, "decoder.onnx"),
                decoder_piece(model, "decoder_single.onnx", return_single_mask=True), batch_decoder_piece(model)]

    def manifest(self, config) -> dict:
        return {
            "preprocessing": {"img_size": config.img_size, "pixel_mean": list(config.pixel_mean),
                              "pixel_std": list(config.pixel_std), "resize_rule": RESIZE,
                              "resize": f"longest side to img_size, Pillow bilinear; pad bottom/right with zeros; "
                                        f"prompts and masks in the {PROMPT_FRAME}-px frame (EfficientViTSamPredictor)"},
            "decoder": {"signature": f"official segment_anything ONNX decoder (opset 17), prompts in the "
                                     f"{PROMPT_FRAME}-px frame",
                        "masks": {"decoder.onnx": 4, "decoder_single.onnx": 1, "decoder_batch.onnx": 4},
                        "batch": "decoder_batch.onnx", "low_res_size": config.low_res_size,
                        "features": [ENCODER_OUTPUT], "prompt_layout": "sam"},
        }

    def reference(self, model):
        from efficientsam.models.efficientvit.sam import EfficientViTSamPredictor

        return NumpyPrompts(EfficientViTSamPredictor(model))

    def reference_mask_generator(self, model, **settings):
        from efficientsam.models.efficientvit.sam import EfficientViTSamAutomaticMaskGenerator

        return EfficientViTSamAutomaticMaskGenerator(model, **settings)


EFFICIENTVIT_SAM = register(EfficientViTSamFamily())
