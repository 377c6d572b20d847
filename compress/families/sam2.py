"""The SAM 2 / 2.1 family (sam2 1.1.0's models: Hiera tiny, small, base+ and large).

Built with sam2's own configs (they ship inside the package), so the reference is upstream's
`SAM2ImagePredictor` on the same module. A bundle holds the four pieces the video tracker (next)
runs every frame, the prompt decoder in two files:

    encoder.onnx          image [1, 3, S, S] -> high_res_feats_0 [1, 32, 4g, 4g], high_res_feats_1
                          [1, 64, 2g, 2g], image_embed [1, 256, g, g] (g = S / 16; no_mem_embed added,
                          as the image predictor and samexporter do)
    decoder.onnx          samexporter's SAM 2 decoder, for clients: the three features, point_coords
                          [N, P, 2] (in the S x S frame), point_labels [N, P], mask_input [N, 1, 4g, 4g],
                          has_mask_input [N] -> masks [N, 3, 4g, 4g] (multimask, clamped to +-32),
                          iou_predictions [N, 3]
    decoder_batch.onnx    the same inputs -> iou_predictions [N, 4], low_res_masks [N, 4, 4g, 4g] (mask 0:
                          the single-mask answer after sam2's dynamic fall-back to the most stable
                          multimask one; 1..3 the multimask ones; not clamped: Session clamps to +-32
                          as the image predictor does, the tracker does not, as the video predictor),
                          object_score_logits [N, 1], obj_ptr [N, 4, 256] (each mask token's
                          object pointer, for tracking)
    memory_encoder.onnx, memory_attention.onnx   (compress/families/sam2_memory.py)
    tracking.safetensors  the constants the tracker (runtime/tracker.py) adds in numpy: see `tracking_tensors`

The image predictor resizes the image to S x S (the aspect ratio is not kept) with torchvision's
antialiased bilinear resize on 0..1 floats, and its prompts put a box's two corners before the points
and always end with a padding point (the decoder graph adds it): runtime/geometry.py's "square" rule
and the "sam2" prompt layout.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config_data import ConfigData
from ..errors import CheckpointError
from ..recipe import COMPRESSIONS
from .registry import ModelFamily, NumpyPrompts, Piece, register
from .sam2_widths import HieraWidths, narrow_hiera, widths_from_state

# sam2's image transforms: ImageNet statistics on 0..1 floats, here in 0..255 units as SAM 1's.
SAM2_PIXEL_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
SAM2_PIXEL_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
RESIZE = "square"
LOGIT_CLAMP = 32.0  # SAM2ImagePredictor clamps the low-res logits to +-32
FEATURES = ("high_res_feats_0", "high_res_feats_1", "image_embed")  # the encoder's outputs, samexporter's order
DECODER_FEATURES = ("image_embed", "high_res_feats_0", "high_res_feats_1")  # its decoder's first inputs
PROMPT_INPUTS = ("point_coords", "point_labels", "mask_input", "has_mask_input")
CLIENT_OUTPUTS = ("masks", "iou_predictions")
BATCH_OUTPUTS = ("iou_predictions", "low_res_masks", "object_score_logits", "obj_ptr")
PROMPT_AXES = {"point_coords": {0: "num_prompts", 1: "num_points"}, "point_labels": {0: "num_prompts", 1: "num_points"},
               "mask_input": {0: "num_prompts"}, "has_mask_input": {0: "num_prompts"}}
# (Hiera embed dim, blocks) -> size, and the config files of each release (sam2 1.1.0's).
SIZES = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}
SIZE_OF_DEPTH = {blocks: size for (_, blocks), size in SIZES.items()}  # a pruned file keeps its depth
RELEASES = {"sam2.1": "configs/sam2.1/sam2.1_hiera_{size}.yaml", "sam2": "configs/sam2/sam2_hiera_{size}.yaml"}


class Sam2Grid:
    """The feature grid (stride 16) and low-res mask size of SAM 2 and the sam2 forks' configs."""

    backbone_stride: ClassVar[int] = 16

    @property
    def embedding_size(self) -> int:
        return self.img_size // self.backbone_stride

    @property
    def low_res_size(self) -> int:
        return 4 * self.embedding_size


@dataclass(frozen=True)
class Sam2Config(Sam2Grid, ConfigData):
    """A SAM 2 architecture as data: sam2's config file and Hydra overrides (no pickled code)."""

    name: str
    config_file: str  # inside the sam2 package, e.g. configs/sam2.1/sam2.1_hiera_t.yaml
    overrides: tuple[str, ...] = ()  # Hydra overrides, e.g. a smaller image size for tests
    img_size: int = 1024
    pixel_mean: tuple[float, float, float] = SAM2_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM2_PIXEL_STD
    # A pruned (SlimSAM) Hiera: its widths, applied after build_sam2 (sam2_widths.py); empty: the release's.
    hiera_stage_dims: tuple[int, ...] = ()  # residual width of each stage
    hiera_attn_dims: tuple[int, ...] = ()  # per block: q/k/v width
    hiera_mlp_dims: tuple[int, ...] = ()  # per block: MLP hidden width

    family: ClassVar[str] = "sam2"

    @property
    def hiera_widths(self) -> HieraWidths | None:
        """The pruned widths, or None for the release's architecture."""
        if not (self.hiera_stage_dims or self.hiera_attn_dims or self.hiera_mlp_dims):
            return None
        return HieraWidths(self.hiera_stage_dims, self.hiera_attn_dims, self.hiera_mlp_dims)

    def with_widths(self, widths: HieraWidths, name: str) -> "Sam2Config":
        return self.replace(name=name, hiera_stage_dims=tuple(widths.stages), hiera_attn_dims=tuple(widths.attn),
                            hiera_mlp_dims=tuple(widths.mlp))


def _is_release(widths: HieraWidths, embed_dim: int) -> bool:
    """Hiera as released: stage widths doubling from embed_dim, q/k/v as wide as each block's output (so
    the attention widths run through the stage widths), MLP 4x."""
    stages = tuple(embed_dim * 2**i for i in range(len(widths.stages)))
    return (widths.stages == stages and set(widths.attn) == set(stages)
            and all(m == 4 * a for a, m in zip(widths.attn, widths.mlp)))


def _official(release: str, size: str) -> Sam2Config:
    return Sam2Config(name=f"{release}_hiera_{size}", config_file=RELEASES[release].format(size=size))


def _small_image(config: Sam2Config, img_size: int, name: str) -> Sam2Config:
    """`config` at `img_size` px: the memory attention's RoPE grid follows the feature grid."""
    grid = img_size // Sam2Config.backbone_stride
    rope = [f"++model.memory_attention.layer.{part}.feat_sizes=[{grid},{grid}]"
            for part in ("self_attention", "cross_attention")]
    return config.replace(name=name, img_size=img_size, overrides=(f"++model.image_size={img_size}", *rope))


MODEL_TYPES = {config.name: config for config in
               [_official(release, size) for release in RELEASES for size in ("t", "s", "b+", "l")]}
# Hiera-t at 256 px: the real architecture, small enough for unit tests (0.2 s per image).
MODEL_TYPES["sam2.1_hiera_t_256"] = _small_image(MODEL_TYPES["sam2.1_hiera_t"], 256, "sam2.1_hiera_t_256")


def perturb(model: nn.Module, seed: int) -> None:
    """Seeded noise on every parameter: sam2's get_clones gives every memory-attention layer (and
    memory-encoder block) the same initial weights, and LayerNorms start at 1 and 0, so a layer-order
    or wiring bug would not show on freshly built weights."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            spread = float(parameter.std()) if parameter.numel() > 1 else 0.0
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(noise * (0.1 * spread if spread > 0 else 0.02))


def _bicubic_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """[size_out, size_in]: torch's bicubic resize (align_corners=False) along one axis, as a matrix."""
    identity = torch.eye(size_in)[:, None, :, None]  # [in, 1, in, 1]: one unit impulse per row
    with torch.no_grad():
        resized = F.interpolate(identity, size=(size_out, 1), mode="bicubic")  # [in, 1, out, 1]
    return resized[:, 0, :, 0].T.contiguous()


@contextlib.contextmanager
def static_position_embedding(model, img_size: int):
    """While open, Hiera's position embedding is computed for `img_size` px with sizes known at trace
    time: upstream resizes and tiles its tables to traced shapes, which the exporter writes with If nodes
    that TensorRT's fp16 conversion cannot pass (export/tensorrt_onnx.py). Bicubic resizing is
    separable and linear, so here it is two products with fixed [S/4, 7] matrices (torch's own bicubic
    of the identity) on the same small table; storing the resized table instead would add
    [1, S/4, S/4, C] floats to the bundle (hiera-t at 1024 px: 25 MB)."""
    trunk = model.image_encoder.trunk
    side = img_size // trunk.patch_embed.proj.stride[0]
    _, _, table_h, table_w = trunk.pos_embed.shape
    window_h, window_w = trunk.pos_embed_window.shape[-2:]
    rows, columns = _bicubic_matrix(table_h, side), _bicubic_matrix(table_w, side)  # [side, 7]

    def position_embedding(hw):
        table = rows @ trunk.pos_embed @ columns.T  # [1, C, side, side]
        channels = table.shape[1]
        # The window table tiled over the grid (tile's export takes an If on the repeats' rank).
        window = trunk.pos_embed_window.reshape(1, channels, 1, window_h, 1, window_w)
        tiled = window.expand(1, channels, side // window_h, window_h, side // window_w, window_w)
        return (table + tiled.reshape(1, channels, side, side)).permute(0, 2, 3, 1)  # [1, h, w, C]

    trunk._get_pos_embed = position_embedding
    try:
        yield
    finally:
        del trunk._get_pos_embed  # the class's method again


class ImageEncoderPiece(nn.Module):
    """image [1, 3, S, S] -> the three features the decoders take (SAM2ImagePredictor.set_image's)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        backbone = self.model.forward_image(image)  # conv_s0 / conv_s1 applied to the two high-res levels
        levels = backbone["backbone_fpn"][-self.model.num_feature_levels:]  # [1, C_i, H_i, W_i]
        # no_mem_embed [1, 1, C] is added per channel to the lowest-resolution level (as the predictor
        # does on its [HW, 1, C] layout); the position encodings are not needed (and not exported).
        embed = levels[-1] + self.model.no_mem_embed.reshape(1, -1, 1, 1)
        return (*levels[:-1], embed)  # high_res_feats_0, high_res_feats_1, image_embed


def predict_masks(decoder, image_embed, image_pe, sparse, dense, high_res_feats_0, high_res_feats_1):
    """sam2's MaskDecoder.predict_masks for one image and N prompt sets, the image's features broadcast
    against the prompt sets (upstream repeats them with repeat_interleave, a OneHot in ONNX that TensorRT
    rejects). image_embed, image_pe [1, C, g, g]; sparse [N, T, C]; dense [N, C, g, g]; high-res features
    [1, C/8, 4g, 4g] and [1, C/4, 2g, 2g]. Returns masks [N, 4, 4g, 4g], scores [N, 4], mask tokens
    [N, 4, C], object score logits [N, 1] (SAM 2.1 predicts object scores: pred_obj_scores)."""
    output_tokens = torch.cat([decoder.obj_score_token.weight, decoder.iou_token.weight,
                               decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    src = image_embed + dense  # [N, C, g, g]
    _, channels, height, width = src.shape
    hs, src = decoder.transformer(src, image_pe, tokens)  # the image positions broadcast too
    mask_tokens = hs[:, 2: 2 + decoder.num_mask_tokens, :]
    src = src.transpose(1, 2).reshape(-1, channels, height, width)
    upscale_1, norm, act_1, upscale_2, act_2 = decoder.output_upscaling
    upscaled = act_1(norm(upscale_1(src) + high_res_feats_1))
    upscaled = act_2(upscale_2(upscaled) + high_res_feats_0)  # [N, C/8, 4g, 4g]
    hyper_in = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
                           dim=1)  # [N, 4, C/8]
    _, up_channels, up_height, up_width = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(-1, up_channels, up_height * up_width)).reshape(-1, 4, up_height, up_width)
    return masks, decoder.iou_prediction_head(hs[:, 1, :]), mask_tokens, decoder.pred_obj_score_head(hs[:, 0, :])


class _Prompted(nn.Module):
    """The prompt encoder and mask decoder on one image and N prompt sets (no repeat_interleave:
    the image's features broadcast against the prompt sets)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def decode(self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input,
               has_mask_input):
        prompts, decoder = self.model.sam_prompt_encoder, self.model.sam_mask_decoder
        sparse = prompts._embed_points(point_coords, point_labels, pad=True)  # [N, P + 1, C]
        has_mask = has_mask_input.reshape(-1, 1, 1, 1)
        dense = has_mask * prompts._embed_masks(mask_input) + \
            (1 - has_mask) * prompts.no_mask_embed.weight.reshape(1, -1, 1, 1)  # [N, C, g, g]
        return predict_masks(decoder, image_embed, prompts.get_dense_pe(), sparse, dense, high_res_feats_0,
                             high_res_feats_1)  # [N, 4, 4g, 4g], [N, 4], [N, 4, C], [N, 1]


class ClientDecoderPiece(_Prompted):
    """samexporter's SAM 2 decoder: the three multimask masks and their scores."""

    def forward(self, *inputs):
        masks, scores, _, _ = self.decode(*inputs)
        return masks[:, 1:].clamp(-LOGIT_CLAMP, LOGIT_CLAMP), scores[:, 1:]


class BatchDecoderPiece(_Prompted):
    """All four answers per prompt set: mask 0 as sam2 answers multimask_output=False (its dynamic
    fall-back included), 1..3 the multimask ones; with each mask token's object pointer."""

    def forward(self, *inputs):
        masks, scores, mask_tokens, object_scores = self.decode(*inputs)
        decoder = self.model.sam_mask_decoder
        single_mask, single_score = decoder._dynamic_multimask_via_stability(masks, scores)
        # Not clamped here: the video predictor uses the logits as they are (the image predictor's
        # +-32 clamp is the manifest's decoder.logit_clamp, applied by runtime.Session).
        masks = torch.cat([single_mask, masks[:, 1:]], dim=1)
        scores = torch.cat([single_score, scores[:, 1:]], dim=1)
        return scores, masks, object_scores, self.model.obj_ptr_proj(mask_tokens)


def _prompt_example(model, prompts: int = 2, points: int = 3) -> tuple:
    grid = model.image_size // Sam2Config.backbone_stride
    generator = torch.Generator().manual_seed(0)
    channels = model.sam_prompt_encoder.embed_dim
    return (torch.randn(1, channels, grid, grid, generator=generator),
            torch.randn(1, channels // 8, 4 * grid, 4 * grid, generator=generator),
            torch.randn(1, channels // 4, 2 * grid, 2 * grid, generator=generator),
            torch.rand(prompts, points, 2, generator=generator) * model.image_size,
            torch.ones(prompts, points), torch.randn(prompts, 1, 4 * grid, 4 * grid, generator=generator),
            torch.ones(prompts))


class Sam2Family(ModelFamily):
    name = "sam2"
    config_class = Sam2Config
    model_types = MODEL_TYPES
    # SlimSAM prunes Hiera too (compress/slimsam/hiera.py), by widths: not whole heads (head counts double per stage).
    compressions = tuple(name for name in COMPRESSIONS if "-heads" not in name)
    client_format = "sam2"

    def build(self, config, seed=None):
        from sam2.build_sam import build_sam2

        if seed is not None:
            torch.manual_seed(seed)
        model = build_sam2(config.config_file, None, device="cpu", hydra_overrides_extra=list(config.overrides))
        if seed is not None:
            perturb(model, seed)
        if config.hiera_widths is not None:  # a pruned model: the same layers, narrower
            narrow_hiera(model.image_encoder, config.hiera_widths)
        model.eval()
        model.config = config
        return model

    def detect(self, state, model_type=None, name="checkpoint"):
        patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
        # Hiera's windowed position table: EfficientTAM's plain ViT trunk has a patch embedding too.
        if patch is None or "image_encoder.trunk.pos_embed_window" not in state:
            return None  # not a Hiera SAM 2
        blocks = len({key.split(".")[3] for key in state if key.startswith("image_encoder.trunk.blocks.")})
        size = SIZE_OF_DEPTH.get(blocks)
        # SAM 2.1 added the spatial no-object embedding (and trained with it): it tells the releases apart.
        release = "sam2.1" if "no_obj_embed_spatial" in state else "sam2"
        if size is None:
            raise CheckpointError(f"a SAM 2 state dict with Hiera embed dim {patch.shape[0]} and {blocks} blocks "
                                  f"matches none of t, s, b+, l; pass a samedge checkpoint that records its "
                                  "architecture")
        detected = f"{release}_hiera_{size}"
        if model_type is not None and model_type != detected:
            raise CheckpointError(f"the file holds a {detected} model, but model type {model_type} was asked for; "
                                  f"pass --model-type {detected}")
        try:
            widths = widths_from_state(state)
        except KeyError as err:
            raise CheckpointError(f"a SAM 2 state dict without Hiera tensor {err}: the file is incomplete") from None
        if _is_release(widths, next(dim for (dim, depth) in SIZES if depth == blocks)):
            return MODEL_TYPES[detected]
        # A pruned Hiera (SlimSAM's kind: the same layers, narrower); build checks the widths fit the depth.
        return MODEL_TYPES[detected].with_widths(widths, f"{detected}-pruned")

    def pieces(self, model) -> list[Piece]:
        from .sam2_memory import MemoryAttentionPiece, MemoryEncoderPiece

        size = model.image_size
        prompt_example = _prompt_example(model)
        image_axes = {**PROMPT_AXES, "masks": {0: "num_prompts"}, "iou_predictions": {0: "num_prompts"}}
        batch_axes = {**PROMPT_AXES, **{name: {0: "num_prompts"} for name in BATCH_OUTPUTS}}
        memory_encoder, memory_attention = MemoryEncoderPiece(model).eval(), MemoryAttentionPiece(model).eval()
        grid, channels = size // Sam2Config.backbone_stride, model.sam_prompt_encoder.embed_dim
        feature_shapes = dict(zip(FEATURES, [(1, channels // 8, 4 * grid, 4 * grid),
                                             (1, channels // 4, 2 * grid, 2 * grid), (1, channels, grid, grid)]))
        low_res, prompts = 4 * grid, "num_prompts"
        client_shapes = {"masks": (prompts, 3, low_res, low_res), "iou_predictions": (prompts, 3)}
        batch_shapes = {"iou_predictions": (prompts, 4), "low_res_masks": (prompts, 4, low_res, low_res),
                        "object_score_logits": (prompts, 1), "obj_ptr": (prompts, 4, channels)}
        return [
            Piece("encoder.onnx", ImageEncoderPiece(model).eval(), (torch.zeros(1, 3, size, size),), ("image",),
                  FEATURES, output_shapes=feature_shapes, role="encoder",
                  tracing=lambda: static_position_embedding(model, size)),
            Piece("decoder.onnx", ClientDecoderPiece(model).eval(), prompt_example, DECODER_FEATURES + PROMPT_INPUTS,
                  CLIENT_OUTPUTS, image_axes, output_shapes=client_shapes, role="client"),
            Piece("decoder_batch.onnx", BatchDecoderPiece(model).eval(), prompt_example,
                  DECODER_FEATURES + PROMPT_INPUTS, BATCH_OUTPUTS, batch_axes, output_shapes=batch_shapes,
                  role="decoder"),
            Piece("memory_encoder.onnx", memory_encoder, memory_encoder.dummy_inputs(), memory_encoder.INPUT_NAMES,
                  memory_encoder.OUTPUT_NAMES, memory_encoder.DYNAMIC_AXES, role="memory"),
            Piece("memory_attention.onnx", memory_attention, memory_attention.dummy_inputs(),
                  memory_attention.INPUT_NAMES, memory_attention.OUTPUT_NAMES, memory_attention.DYNAMIC_AXES,
                  role="memory"),
        ]

    def manifest(self, config) -> dict:
        return {**image_manifest(config), "tracking": tracking_manifest(config)}

    def tensors(self, model) -> dict:
        return {TRACKING_TENSORS: tracking_tensors(model)}

    def video_reference(self, model):
        """sam2's SAM2VideoPredictor on `model`'s own modules (a copy): what build_sam2_video_predictor
        builds, the same SAM2Base with the video predictor's four attributes and its settings. From the
        modules, not a state dict, so a Birkhoff model's HyperLinear layers are the reference as they are."""
        from sam2.sam2_video_predictor import SAM2VideoPredictor

        predictor = copy.deepcopy(model)
        predictor.__class__ = SAM2VideoPredictor
        # SAM2VideoPredictor.__init__'s attributes at their defaults, and build_sam2_video_predictor's
        # post-processing overrides (the image builder already set the decoder's dynamic multimask).
        predictor.non_overlap_masks = False
        predictor.clear_non_cond_mem_around_input = False
        predictor.add_all_frames_to_correct_as_cond = False
        predictor.binarize_mask_from_pts_for_mem_enc = True
        predictor.fill_hole_area = 8  # skipped on a CPU by sam2 itself (no CUDA extension)
        _memory_in_float32(predictor.memory_attention)
        return predictor.eval()

    def reference(self, model):
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return NumpyPrompts(_sized(SAM2ImagePredictor(model), model))

    def reference_mask_generator(self, model, **settings):
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        generator = SAM2AutomaticMaskGenerator(model, **settings)
        _sized(generator.predictor, model)
        return generator


TRACKING_TENSORS = "tracking.safetensors"


SIGNATURE = "samedge SAM 2 decoder (samexporter's inputs; decoder.onnx is samexporter's)"


def image_manifest(config, signature: str = SIGNATURE,
                   features: tuple[str, ...] = FEATURES, decoder_features: tuple[str, ...] = DECODER_FEATURES) -> dict:
    """The preprocessing and decoder sections of a SAM 2 bundle; the sam2 forks' (efficient_tam.py, edgetam.py)
    with their own features."""
    return {
        "preprocessing": {"img_size": config.img_size, "pixel_mean": list(config.pixel_mean),
                          "pixel_std": list(config.pixel_std), "resize_rule": RESIZE,
                          "resize": "stretched to img_size x img_size, antialiased bilinear on 0..1 floats "
                                    "(torchvision's, as sam2's SAM2Transforms)"},
        "decoder": {"signature": signature, "masks": {"decoder.onnx": 3, "decoder_batch.onnx": 4},
                    "batch": "decoder_batch.onnx", "low_res_size": config.low_res_size, "features": list(features),
                    "decoder_inputs": list(decoder_features + PROMPT_INPUTS), "prompt_layout": "sam2",
                    "official": False, "logit_clamp": LOGIT_CLAMP},
    }


def _linear_as_matrix(linear) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [out, in], bias [out]) of any linear module, read from what it computes: a Birkhoff
    HyperLinear answers like the Linear it compresses, so the runtime gets the weights it decodes to."""
    with torch.no_grad():
        bias = linear(torch.zeros(1, linear.in_features))[0]
        weight = (linear(torch.eye(linear.in_features)) - bias).T
    return weight, bias


def tracking_tensors(model) -> dict:
    """What SAM2Base adds to the pieces' outputs while tracking, as float32 arrays (hiera-t at 1024 px: 4 MB,
    nearly all of it the image position encoding)."""
    grid = model.image_size // Sam2Config.backbone_stride
    with torch.no_grad():
        # The neck's sine encoding of the stride-16 level: the memory attention's query positions.
        image_pos = model.image_encoder.neck.position_encoding(torch.zeros(1, model.hidden_dim, grid, grid))
        # The memory encoder's (maskmem_pos_enc): the same for every memory, so a resumed state needs no run.
        memory_pos = model.memory_encoder.position_encoding(torch.zeros(1, model.mem_dim, grid, grid))
    tensors = {
        "no_mem_embed": model.no_mem_embed.reshape(-1),  # [256]: added to the features of a frame with no memory
        "image_pos_enc": image_pos[0],  # [256, g, g]
        "memory_pos_enc": memory_pos[0],  # [64, g, g]
        "maskmem_tpos_enc": model.maskmem_tpos_enc.reshape(model.num_maskmem, -1),  # [7, 64]
        "no_obj_ptr": model.no_obj_ptr.reshape(-1),  # [256]: the pointer of a frame where the object is absent
        # add_new_mask: a 1024 px mask to the decoder's 256 px mask input (a 4 x 4, stride 4 convolution)
        "mask_downsample.weight": model.mask_downsample.weight.reshape(model.mask_downsample.kernel_size),
        "mask_downsample.bias": model.mask_downsample.bias.reshape(-1),
    }
    if model.add_tpos_enc_to_obj_ptrs:  # SAM 2.1: the pointers' temporal encoding, projected 256 -> 64
        tensors["obj_ptr_tpos_proj.weight"], tensors["obj_ptr_tpos_proj.bias"] = \
            _linear_as_matrix(model.obj_ptr_tpos_proj)  # [64, 256], [64]
    return {name: tensor.detach().float().numpy() for name, tensor in tensors.items()}


def tracking_manifest(config) -> dict:
    """The tracking loop's settings: SAM2VideoPredictor's (sam2 1.1.0's SAM2Base defaults and the
    released configs' values), which runtime/tracker.py follows."""
    return {
        "tensors": TRACKING_TENSORS,
        "memory_encoder": "memory_encoder.onnx",
        "memory_attention": "memory_attention.onnx",
        "num_maskmem": 7,  # the current frame's memory slot + 6 earlier frames
        "max_obj_ptrs": 16,
        "memory_stride": 1,  # memory_temporal_stride_for_eval
        "max_cond_frames": -1,  # every conditioning frame (max_cond_frames_in_attn)
        "multimask_points": [0, 1],  # multimask answers for 0..1 clicks (a box counts as 2)
        "binarize_clicked_masks": True,  # binarize_mask_from_pts_for_mem_enc (the video predictor's)
        # How far each object pointer is from the current frame: SAM 2.1 encodes the signed distance
        # (obj_ptr_tpos_proj of a sine encoding); SAM 2 adds no temporal encoding to the pointers.
        "pointer_time": "signed" if config.config_file.startswith("configs/sam2.1/") else "none",
        "frame_resize": "square_bicubic",  # sam2's video loader: PIL's bicubic on uint8 to S x S
        "no_object_logit": -1024.0,  # NO_OBJ_SCORE
        "mask_input_logits": [20.0, -10.0],  # add_new_mask: a mask as logits, scale and bias
    }


def _memory_in_float32(memory_attention) -> None:
    """The video predictor stores memories in bfloat16 and relies on torch.cat with the float32 object
    pointers to promote them; a frame that reads no pointer (tracked before its object's first prompt,
    or in reverse from the last frame) passes bfloat16 to float32 layers, which only CUDA's autocast
    runs. As float32 here: the same values (the bfloat16 rounding stays), as every other frame gets."""
    forward = memory_attention.forward

    def float_memory(*args, memory, memory_pos=None, **kwargs):
        return forward(*args, memory=memory.float(), memory_pos=None if memory_pos is None else memory_pos.float(),
                       **kwargs)

    memory_attention.forward = float_memory


def _sized(predictor, model):
    """SAM2ImagePredictor with the feature grids of `model`'s image size: upstream writes 1024 px's
    (256, 128, 64) into it, which only the official sizes have."""
    grid = model.image_size // Sam2Config.backbone_stride
    predictor._bb_feat_sizes = [(4 * grid, 4 * grid), (2 * grid, 2 * grid), (grid, grid)]
    return predictor


SAM2 = register(Sam2Family())
