"""EdgeTAM: SAM 2's tracker with a RepViT image encoder and a spatial perceiver that compresses memory.

Upstream: edgetam-dimos 1.0.1 (a packaging of facebookresearch/EdgeTAM), a fork of sam2 that ships a
top-level `sam2` package; it runs beside the real sam2 through compress/families/sam2_forks.py.

The architecture is the wheel's own sam2/configs/edgetam.yaml, read as data (never composed) and built
with hydra.utils.instantiate on the fork's classes:
- image encoder: timm's RepViT-M1 (`repvit_m1.dist_in1k`, four stages 48/96/192/384 wide at strides
  4..32) under sam2's FPN neck; scalp 1 drops the stride-32 level, so the decoder gets SAM 2's three
  levels (high-res skips at strides 4 and 8, use_high_res_features_in_sam) and the same pieces;
- memory encoder as SAM 2's, then the spatial perceiver (sam2/modeling/perceiver.py), which upstream
  applies in SAM2Base._encode_new_memory: each frame's g*g memory tokens become `num_latents` 1D latents
  (cross-attending to all tokens) and `num_latents_2d` 2D latents (one per window of the grid), 256 + 256
  at 1024 px. So the memory encoder piece answers [1, T, 64] latents, and the tracker reads tokens
  (manifest memory_layout "tokens");
- memory attention: 2 layers; self-attention RoPEAttention on the grid, cross-attention RoPEAttentionv2
  with queries on the grid (q_sizes) and keys on the 2D latents' grid (k_sizes; the 1D latents and the
  object pointers are not rotated): compress/families/sam2_memory.py;
- SAM2Base of sam2 1.0 (no spatial no-object embedding, no temporal encoding on pointers), and its
  SAM2VideoPredictor of September 2024 (the calls of sam2 1.1.0's, objects added before tracking).

Upstream's TimmBackbone asks timm for pretrained weights (a download); here it is built with
pretrained=False, as the checkpoint holds every weight of it.

Model types: `edgetam` (1024 px, the released edgetam.pt) and `edgetam_256` (the same layers at 256 px:
a 16 x 16 grid, the 2D latents one per 4 x 4 window as at 1024 px, fewer 1D latents) for tests.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import torch

from ..config_data import ConfigData
from ..errors import CheckpointError
from .efficient_tam import embed_points, sam2_module
from .registry import NumpyPrompts, Piece, register
from .sam2 import (BATCH_OUTPUTS, CLIENT_OUTPUTS, DECODER_FEATURES, FEATURES, PROMPT_AXES, PROMPT_INPUTS,
                   SAM2_PIXEL_MEAN, SAM2_PIXEL_STD, BatchDecoderPiece, ClientDecoderPiece, ImageEncoderPiece,
                   Sam2Family, Sam2Grid, _memory_in_float32, _prompt_example, image_manifest, perturb, predict_masks,
                   tracking_manifest, tracking_tensors)
from .sam2_forks import EDGETAM, call_in, nested_set

CONFIG_FILE = "configs/edgetam.yaml"  # inside the wheel's sam2 package
TIMM_MODEL = "repvit_m1.dist_in1k"
STEM_KEY = "image_encoder.trunk.body.stem.conv1.c.weight"  # RepViT's first conv: [24, 3, 3, 3] for M1
LATENTS_KEY, LATENTS_2D_KEY = "spatial_perceiver.latents", "spatial_perceiver.latents_2d"  # [L, 64], [L2, 64]
REPVIT_M1_STEM = 24
NECK_WIDTHS = (384, 192, 96, 48)  # backbone_channel_list: RepViT-M1's stages, deepest first
BATCH_COUNTER = ".num_batches_tracked"


@dataclass(frozen=True)
class EdgeTamConfig(Sam2Grid, ConfigData):
    name: str
    img_size: int = 1024
    num_latents: int = 256  # the perceiver's 1D latents per memory frame
    num_latents_2d: int = 256  # its 2D latents: a square grid, one per window of the feature grid
    pixel_mean: tuple[float, float, float] = SAM2_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM2_PIXEL_STD

    family: ClassVar[str] = "edgetam"

    @property
    def latent_side(self) -> int:
        """Side of the 2D latents' grid (k_sizes): 16 at 1024 px."""
        return round(self.num_latents_2d ** 0.5)

    @property
    def memory_tokens(self) -> int:
        return self.num_latents + self.num_latents_2d

    def check(self) -> None:
        grid, side = self.embedding_size, self.latent_side
        if side * side != self.num_latents_2d or grid % side:
            raise ValueError(f"{self.name}: {self.num_latents_2d} 2D latents must be a square grid whose side divides "
                             f"the {grid} x {grid} feature grid (the perceiver gives each a window of it)")


MODEL_TYPES = {
    "edgetam": EdgeTamConfig(name="edgetam"),
    # 256 px: a 16 x 16 grid; the 2D latents one per 4 x 4 window, as at 1024 px (64 / 16); 32 1D latents,
    # a count of their own so that a mix-up of the two kinds shows as a shape.
    "edgetam_256": EdgeTamConfig(name="edgetam_256", img_size=256, num_latents=32, num_latents_2d=16),
}


def build_offline_timm_trunk(name: str, features):
    """The fork's TimmBackbone with timm's architecture and no pretrained weights (upstream hard-codes
    pretrained=True: a download from the Hugging Face hub, which the checkpoint's weights replace anyway).
    Hydra calls this while the fork is active, so `sam2` is the fork's."""
    import sam2.modeling.backbones.timm as fork_timm

    create_model = fork_timm.create_model

    def offline(*args, **kwargs):
        return create_model(*args, **{**kwargs, "pretrained": False})

    fork_timm.create_model = offline
    try:
        return fork_timm.TimmBackbone(name, features)
    finally:
        fork_timm.create_model = create_model


def model_config(config: EdgeTamConfig) -> dict:
    """The wheel's edgetam.yaml `model` at `config`'s sizes, with build_sam2's image post-processing."""
    config.check()
    model = EDGETAM.config_file(CONFIG_FILE)["model"]
    grid, side = config.embedding_size, config.latent_side
    trunk = model["image_encoder"]["trunk"]
    if trunk.get("name") != TIMM_MODEL or tuple(model["image_encoder"]["neck"]["backbone_channel_list"]) != NECK_WIDTHS:
        raise CheckpointError(f"edgetam-dimos' {CONFIG_FILE} is not the RepViT-M1 EdgeTAM samedge knows; "
                              "install edgetam-dimos==1.0.1")
    trunk["_target_"] = f"{__name__}.build_offline_timm_trunk"
    overrides = {
        "image_size": config.img_size,
        # The RoPE grids follow the feature grid (self-attention recomputes its own; RoPEAttentionv2 does not).
        "memory_attention.layer.self_attention.feat_sizes": [grid, grid],
        "memory_attention.layer.cross_attention.q_sizes": [grid, grid],
        "memory_attention.layer.cross_attention.k_sizes": [side, side],
        "spatial_perceiver.num_latents": config.num_latents,
        "spatial_perceiver.num_latents_2d": config.num_latents_2d,
        # build_sam2's apply_postprocessing (the image and the video builders both set these)
        "sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
        "sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
        "sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
    }
    for key, value in overrides.items():
        nested_set(model, key, value)
    return model


def perturb_batch_norms(model, seed: int) -> None:
    """Seeded running statistics for RepViT's BatchNorms (built as mean 0, variance 1, which a wrong
    folding or a dropped normalisation would not show); `perturb` covers the parameters."""
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d) and module.running_mean is not None:
                shape = module.running_mean.shape
                module.running_mean.add_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.mul_(torch.exp(0.2 * torch.randn(shape, generator=generator)))


def without_batch_counters(model) -> None:
    """No BatchNorm num_batches_tracked: an int64 count of training steps that eval never reads, a 0-d
    integer that samedge checkpoints (floating-point weights only) and digests do not hold. Each BatchNorm
    then loads a state dict with or without the counter alike (torch's own loading adds one back for
    state dicts saved without metadata, which the hook takes out again)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.num_batches_tracked is not None:
            module.num_batches_tracked = None
            module.register_load_state_dict_pre_hook(_ignore_batch_counter)


def _ignore_batch_counter(module, state_dict, prefix, *_):
    state_dict.pop(prefix + "num_batches_tracked", None)


class _WhereEmbeddedPoints:
    """SAM 2's three-level decoder with the points embedded by torch.where: the fork's
    PromptEncoder._embed_points (sam2 before 1.1) writes through boolean masks in place."""

    def decode(self, image_embed, high_res_feats_0, high_res_feats_1, point_coords, point_labels, mask_input,
               has_mask_input):
        prompts, decoder = self.model.sam_prompt_encoder, self.model.sam_mask_decoder
        sparse = embed_points(prompts, point_coords, point_labels)  # [N, P + 1, C]
        has_mask = has_mask_input.reshape(-1, 1, 1, 1)
        dense = has_mask * prompts._embed_masks(mask_input) + \
            (1 - has_mask) * prompts.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return predict_masks(decoder, image_embed, prompts.get_dense_pe(), sparse, dense, high_res_feats_0,
                             high_res_feats_1)


class EdgeTamClientDecoderPiece(_WhereEmbeddedPoints, ClientDecoderPiece):
    """samexporter's SAM 2 decoder (three multimask masks, clamped to +-32, and their scores)."""


class EdgeTamBatchDecoderPiece(_WhereEmbeddedPoints, BatchDecoderPiece):
    """sam2.py's batch decoder: mask 0 the single-mask answer, 1..3 multimask, each token's pointer."""


def _sized(predictor, model):
    grid = model.image_size // EdgeTamConfig.backbone_stride
    predictor._bb_feat_sizes = [(4 * grid, 4 * grid), (2 * grid, 2 * grid), (grid, grid)]
    return predictor


class EdgeTamFamily(Sam2Family):
    name = "edgetam"
    config_class = EdgeTamConfig
    model_types = MODEL_TYPES
    compressions = ("birkhoff",)
    client_format = "sam2"  # the three features and samexporter's decoder inputs, as SAM 2's
    fork = EDGETAM

    def build(self, config, seed=None):
        with torch.random.fork_rng():  # sam2 and timm initialise from the global generator
            if seed is not None:
                torch.manual_seed(seed)
            model = self.fork.instantiate(model_config(config))
        if seed is not None:
            perturb(model, seed)
            perturb_batch_norms(model, seed)
        without_batch_counters(model)
        model.eval()
        model.config = config
        return model

    def detect(self, state, model_type=None, name="checkpoint"):
        stem, latents, latents_2d = state.get(STEM_KEY), state.get(LATENTS_KEY), state.get(LATENTS_2D_KEY)
        if stem is None or latents_2d is None:
            return None  # no RepViT trunk or no 2D perceiver: not EdgeTAM
        # The released edgetam.pt, saved from training, holds BatchNorm's int64 step counters, which samedge's
        # loader would refuse as integer weights: not weights (see without_batch_counters), so dropped here.
        for key in [k for k in state if k.endswith(BATCH_COUNTER)]:
            del state[key]
        neck = tuple(state[f"image_encoder.neck.convs.{i}.conv.weight"].shape[1] for i in range(len(NECK_WIDTHS))
                     if f"image_encoder.neck.convs.{i}.conv.weight" in state)
        if stem.shape[0] != REPVIT_M1_STEM or neck != NECK_WIDTHS:
            raise CheckpointError(f"an EdgeTAM state dict with a RepViT stem of {stem.shape[0]} channels and neck "
                                  f"inputs {neck}: samedge knows RepViT-M1's ({REPVIT_M1_STEM}, {NECK_WIDTHS})")
        counts = (0 if latents is None else latents.shape[0], latents_2d.shape[0])
        fitting = [t for t, c in MODEL_TYPES.items() if (c.num_latents, c.num_latents_2d) == counts]
        if model_type is not None:
            if model_type not in fitting:
                raise CheckpointError(f"the file holds an EdgeTAM model with {counts[0]} + {counts[1]} memory latents, "
                                      f"which model type {model_type} does not have; pass --model-type one of "
                                      f"{fitting or sorted(MODEL_TYPES)}")
            return MODEL_TYPES[model_type]
        if not fitting:
            raise CheckpointError(f"an EdgeTAM state dict with {counts[0]} + {counts[1]} memory latents fits none of "
                                  f"{sorted(MODEL_TYPES)}")
        return MODEL_TYPES[fitting[0]]

    def pieces(self, model) -> list[Piece]:
        from .sam2_memory import MemoryAttentionPiece, MemoryEncoderPiece

        size, active = model.image_size, self.fork.active
        grid, channels = size // EdgeTamConfig.backbone_stride, model.sam_prompt_encoder.embed_dim
        low_res, prompts = 4 * grid, "num_prompts"
        with active():  # the pieces read the fork's modules (RoPE tables) as they are built
            memory_encoder, memory_attention = MemoryEncoderPiece(model).eval(), MemoryAttentionPiece(model).eval()
        feature_shapes = dict(zip(FEATURES, [(1, channels // 8, 4 * grid, 4 * grid),
                                             (1, channels // 4, 2 * grid, 2 * grid), (1, channels, grid, grid)]))
        client_axes = {**PROMPT_AXES, "masks": {0: prompts}, "iou_predictions": {0: prompts}}
        batch_axes = {**PROMPT_AXES, **{name: {0: prompts} for name in BATCH_OUTPUTS}}
        client_shapes = {"masks": (prompts, 3, low_res, low_res), "iou_predictions": (prompts, 3)}
        batch_shapes = {"iou_predictions": (prompts, 4), "low_res_masks": (prompts, 4, low_res, low_res),
                        "object_score_logits": (prompts, 1), "obj_ptr": (prompts, 4, channels)}
        example = _prompt_example(model)
        return [
            Piece("encoder.onnx", ImageEncoderPiece(model).eval(), (torch.zeros(1, 3, size, size),), ("image",),
                  FEATURES, output_shapes=feature_shapes, role="encoder", tracing=active),
            Piece("decoder.onnx", EdgeTamClientDecoderPiece(model).eval(), example, DECODER_FEATURES + PROMPT_INPUTS,
                  CLIENT_OUTPUTS, client_axes, output_shapes=client_shapes, role="client", tracing=active),
            Piece("decoder_batch.onnx", EdgeTamBatchDecoderPiece(model).eval(), example,
                  DECODER_FEATURES + PROMPT_INPUTS, BATCH_OUTPUTS, batch_axes, output_shapes=batch_shapes,
                  role="decoder", tracing=active),
            Piece("memory_encoder.onnx", memory_encoder, memory_encoder.dummy_inputs(), memory_encoder.INPUT_NAMES,
                  memory_encoder.OUTPUT_NAMES, memory_encoder.DYNAMIC_AXES, role="memory", tracing=active),
            Piece("memory_attention.onnx", memory_attention, memory_attention.dummy_inputs(),
                  memory_attention.INPUT_NAMES, memory_attention.OUTPUT_NAMES, memory_attention.DYNAMIC_AXES,
                  role="memory", tracing=active),
        ]

    def manifest(self, config) -> dict:
        # SAM 2's loop on a sam2 1.0 base: no temporal encoding on the pointers (add_tpos_enc_to_obj_ptrs
        # false), no spatial no-object embedding; the memory is the perceiver's latents.
        tracking = tracking_manifest(SimpleNamespace(config_file=""))
        tracking.update({
            "memory_takes_object_score": False,
            "memory_layout": "tokens",  # maskmem_features [1, T, 64], memory_pos_enc [T, 64]
            "memory_tokens": config.memory_tokens,  # T: 1D latents, then 2D latents
            "predictor": "edgetam-dimos 1.0.1's SAM2VideoPredictor (sam2's of September 2024: objects are added "
                         "before tracking starts)",
        })
        return {**image_manifest(config), "tracking": tracking}

    def tensors(self, model) -> dict:
        from .sam2 import TRACKING_TENSORS
        from .sam2_memory import MemoryEncoderPiece

        with self.fork.active(), torch.no_grad():
            tensors = tracking_tensors(model)
            # The latents' positions (the perceiver's, the same every frame) replace the grid's: [T, 64].
            encoder = MemoryEncoderPiece(model).eval()
            _, positions = encoder(*encoder.dummy_inputs())
        tensors["memory_pos_enc"] = positions[0].float().numpy()
        return {TRACKING_TENSORS: tensors}

    def reference(self, model):
        with self.fork.active():
            predictor = sam2_module(None, "sam2.sam2_image_predictor").SAM2ImagePredictor(model)
        return NumpyPrompts(call_in(self.fork, _sized(predictor, model)))

    def reference_mask_generator(self, model, **settings):
        with self.fork.active():
            generator = sam2_module(None, "sam2.automatic_mask_generator").SAM2AutomaticMaskGenerator(model, **settings)
        _sized(generator.predictor, model)
        return call_in(self.fork, generator)

    def video_reference(self, model):
        """The fork's SAM2VideoPredictor on `model`'s own modules (a copy), as its build_sam2_video_predictor
        sets it up (binarized clicked masks for memory), but without filling holes: the builder asks for
        holes up to 8 px filled, which sam2 1.1.0 skips on a CPU (its CUDA kernel only) and the numpy tracker
        does not do, while edgetam-dimos fills them on a CPU too (OpenCV's connected components)."""
        with self.fork.active():
            from sam2.sam2_video_predictor import SAM2VideoPredictor  # the fork's (inside the block)

            predictor = copy.deepcopy(model)
            predictor.__class__ = SAM2VideoPredictor
        predictor.fill_hole_area = 0
        predictor.non_overlap_masks = False
        predictor.clear_non_cond_mem_around_input = False
        predictor.clear_non_cond_mem_for_multi_obj = False
        predictor.add_all_frames_to_correct_as_cond = False
        predictor.binarize_mask_from_pts_for_mem_enc = True
        _memory_in_float32(predictor.memory_attention)
        _perceiver_per_object(predictor.spatial_perceiver)
        return call_in(self.fork, predictor.eval())


def _perceiver_per_object(perceiver) -> None:
    """The fork's PerceiverResampler.forward_2d views its expanded latents (`.expand(B, ...).view(...)`),
    which torch refuses for a batch of more than one ("view size is not compatible with input tensor's
    size and stride"): the video predictor encodes the memory of all objects in one batch when tracking
    starts, and fails with two objects. Each object alone is what the batch computes (the perceiver
    mixes nothing across it), so the reference runs it one object at a time."""
    forward = perceiver.forward

    def per_object(x, pos=None):
        answers = [forward(x[i: i + 1], None if pos is None else pos[i: i + 1]) for i in range(x.shape[0])]
        latents = torch.cat([latent for latent, _ in answers])
        return latents, None if pos is None else torch.cat([position for _, position in answers])

    perceiver.forward = per_object


EDGETAM_FAMILY = register(EdgeTamFamily())
