"""EfficientTAM (Efficient Track Anything): SAM 2's tracker on a plain ViT image encoder.

Upstream: efficient-track-anything 1.0 (yformer/EfficientTAM), a fork of sam2 that ships a top-level
`sam2` package; it runs beside the real sam2 through compress/families/sam2_forks.py.

The architecture comes from two places:
- the fork's code: sam2.modeling.backbones.vitdet.ViT (patch 16, windowed blocks, an absolute position table
  pretrained at 224 px, resized bicubically), image_encoder.ViTDetNeck (one 1x1 + 3x3 conv level, LayerNorm),
  SAM2Base as of sam2 before 2.1 (no spatial no-object embedding, no temporal encoding on pointers), and
  its legacy SAM2VideoPredictor;
- the published config files of yformer/EfficientTAM (sam2/configs/efficienttam_{ti,s}.yaml and the
  _512x512 ones; the wheel ships no yaml): ViT embed 192 / 384, depth 12, heads 3 / 6, window 14 except
  blocks 2, 5, 8, 11; neck d_model 256; the memory attention and encoder of SAM 2 (4 RoPE layers, memory
  dim 64); use_high_res_features_in_sam false (so ONE feature level: the decoder upsamples without the
  stride-4 / stride-8 skips), add_tpos_enc_to_obj_ptrs false. Written below as data (`model_config`) and
  built with hydra.utils.instantiate on the fork's classes: nothing is composed from files.
The released checkpoints' cross-attention is RoPEAttention (efficienttam_ti.yaml, efficienttam_s.yaml); the
EfficientRoPEAttention1/2 variants (_1 / _2 configs: keys and values of spatial memory average-pooled 2x2)
hold the same tensors, so shapes cannot tell them apart, and samedge does not export them (refused).

A bundle holds SAM 2's pieces with one feature, `image_embed` [1, 256, g, g] (no_mem_embed added):
encoder.onnx, decoder_batch.onnx (image_embed and the prompts), memory_encoder.onnx,
memory_attention.onnx, tracking.safetensors. No client files: samexporter's SAM 2 decoder takes three levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import ClassVar

import torch

from ..config_data import ConfigData
from ..errors import CheckpointError
from .registry import NumpyPrompts, Piece, register
from .sam2 import (BATCH_OUTPUTS, CLIENT_OUTPUTS, LOGIT_CLAMP, PROMPT_AXES, PROMPT_INPUTS, SAM2_PIXEL_MEAN,
                   SAM2_PIXEL_STD, BatchDecoderPiece, ImageEncoderPiece, Sam2Family, Sam2Grid, image_manifest, perturb,
                   tracking_manifest, tracking_tensors)
from .sam2_forks import EFFICIENT_TAM, call_in, nested_set

FEATURES = ("image_embed",)
SIZES = {192: ("ti", 3), 384: ("s", 6)}  # ViT embed dim -> (size, heads), depth 12 both
TRUNK_KEY = "image_encoder.trunk.patch_embed.proj.weight"
NECK_KEY = "image_encoder.neck.convs.0.conv_1x1.weight"  # ViTDetNeck's: Hiera's FPN neck has no convs.*.conv_1x1


@dataclass(frozen=True)
class EfficientTamConfig(Sam2Grid, ConfigData):
    name: str
    embed_dim: int = 192
    num_heads: int = 3
    depth: int = 12
    img_size: int = 1024
    pixel_mean: tuple[float, float, float] = SAM2_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM2_PIXEL_STD

    family: ClassVar[str] = "efficient_tam"


def _size(config: EfficientTamConfig, img_size: int, name: str) -> EfficientTamConfig:
    return config.replace(name=name, img_size=img_size)


def _official(size: str) -> EfficientTamConfig:
    embed_dim = next(dim for dim, (s, _) in SIZES.items() if s == size)
    return EfficientTamConfig(name=f"efficienttam_{size}", embed_dim=embed_dim, num_heads=SIZES[embed_dim][1])


MODEL_TYPES = {}
for _s in ("ti", "s"):
    MODEL_TYPES[f"efficienttam_{_s}"] = _official(_s)
    MODEL_TYPES[f"efficienttam_{_s}_512"] = _size(_official(_s), 512, f"efficienttam_{_s}_512")  # _512x512.yaml
# EfficientTAM-Ti at 256 px (16 x 16 grid): the real architecture, small enough for unit tests.
MODEL_TYPES["efficienttam_ti_256"] = _size(MODEL_TYPES["efficienttam_ti"], 256, "efficienttam_ti_256")


def _rope(grid: int, **extra) -> dict:
    return {"_target_": "sam2.modeling.sam.transformer.RoPEAttention", "rope_theta": 10000.0,
            "feat_sizes": [grid, grid], "embedding_dim": 256, "num_heads": 1, "downsample_rate": 1, "dropout": 0.1,
            **extra}


def _sine(features: int) -> dict:
    return {"_target_": "sam2.modeling.position_encoding.PositionEmbeddingSine", "num_pos_feats": features,
            "normalize": True, "scale": None, "temperature": 10000}


def model_config(config: EfficientTamConfig) -> dict:
    """The published efficienttam_{ti,s}(_512x512).yaml's `model` as data, with build_sam2's image
    post-processing (the decoder's dynamic multimask fall-back) and the video predictor's settings."""
    grid = config.embedding_size
    model = {
        "_target_": "sam2.modeling.sam2_base.SAM2Base",
        "image_encoder": {
            "_target_": "sam2.modeling.backbones.image_encoder.ImageEncoder", "scalp": 0,
            "trunk": {"_target_": "sam2.modeling.backbones.vitdet.ViT", "patch_size": 16,
                      "embed_dim": config.embed_dim, "depth": config.depth, "num_heads": config.num_heads,
                      "mlp_ratio": 4.0, "qkv_bias": True, "drop_path_rate": 0.0, "use_rel_pos": False,
                      "window_size": 14, "window_block_indexes": [0, 1, 3, 4, 6, 7, 9, 10]},
            "neck": {"_target_": "sam2.modeling.backbones.image_encoder.ViTDetNeck", "position_encoding": _sine(256),
                     "d_model": 256, "backbone_channel_list": [config.embed_dim], "neck_norm": "LN"},
        },
        "memory_attention": {
            "_target_": "sam2.modeling.memory_attention.MemoryAttention", "d_model": 256, "pos_enc_at_input": True,
            "num_layers": 4,
            "layer": {"_target_": "sam2.modeling.memory_attention.MemoryAttentionLayer", "activation": "relu",
                      "dim_feedforward": 2048, "dropout": 0.1, "pos_enc_at_attn": False, "d_model": 256,
                      "pos_enc_at_cross_attn_keys": True, "pos_enc_at_cross_attn_queries": False,
                      "self_attention": _rope(grid),
                      "cross_attention": _rope(grid, rope_k_repeat=True, kv_in_dim=64)},
        },
        "memory_encoder": {
            "_target_": "sam2.modeling.memory_encoder.MemoryEncoder", "out_dim": 64, "position_encoding": _sine(64),
            "mask_downsampler": {"_target_": "sam2.modeling.memory_encoder.MaskDownSampler", "kernel_size": 3,
                                 "stride": 2, "padding": 1},
            "fuser": {"_target_": "sam2.modeling.memory_encoder.Fuser", "num_layers": 2,
                      "layer": {"_target_": "sam2.modeling.memory_encoder.CXBlock", "dim": 256, "kernel_size": 7,
                                "padding": 3, "layer_scale_init_value": 1e-6, "use_dwconv": True}},
        },
        "num_maskmem": 7, "image_size": config.img_size,
        "sigmoid_scale_for_mem_enc": 20.0, "sigmoid_bias_for_mem_enc": -10.0,
        "use_mask_input_as_output_without_sam": True, "directly_add_no_mem_embed": True,
        "use_high_res_features_in_sam": False, "multimask_output_in_sam": True, "iou_prediction_use_sigmoid": True,
        "use_obj_ptrs_in_encoder": True, "add_tpos_enc_to_obj_ptrs": False, "only_obj_ptrs_in_the_past_for_eval": True,
        "pred_obj_scores": True, "pred_obj_scores_mlp": True, "fixed_no_obj_ptr": True,
        "multimask_output_for_tracking": True, "use_multimask_token_for_obj_ptr": True,
        "multimask_min_pt_num": 0, "multimask_max_pt_num": 1, "use_mlp_for_obj_ptr_proj": True,
        "compile_image_encoder": False,
    }
    # build_sam2's apply_postprocessing (the image and the video builders both set these)
    for key, value in (("dynamic_multimask_via_stability", True), ("dynamic_multimask_stability_delta", 0.05),
                       ("dynamic_multimask_stability_thresh", 0.98)):
        nested_set(model, f"sam_mask_decoder_extra_args.{key}", value)
    return model


def predict_masks_one_level(decoder, image_embed, image_pe, sparse, dense):
    """sam2's MaskDecoder.predict_masks with use_high_res_features=False, for one image and N prompt sets
    (the image broadcast, as compress/families/sam2.py's predict_masks). Returns masks [N, 4, 4g, 4g],
    scores [N, 4], mask tokens [N, 4, C], object score logits [N, 1]."""
    output_tokens = torch.cat([decoder.obj_score_token.weight, decoder.iou_token.weight,
                               decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    src = image_embed + dense  # [N, C, g, g]
    _, channels, height, width = src.shape
    hs, src = decoder.transformer(src, image_pe, tokens)
    mask_tokens = hs[:, 2: 2 + decoder.num_mask_tokens, :]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(-1, channels, height, width))  # [N, C/8, 4g, 4g]
    hyper_in = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
                           dim=1)  # [N, 4, C/8]
    _, up_channels, up_height, up_width = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(-1, up_channels, up_height * up_width)).reshape(-1, 4, up_height, up_width)
    return masks, decoder.iou_prediction_head(hs[:, 1, :]), mask_tokens, decoder.pred_obj_score_head(hs[:, 0, :])


def embed_points(prompt_encoder, points, labels):
    """PromptEncoder._embed_points(points, labels, pad=True) without in-place masked writes: the fork's
    (sam2 before 1.1) assigns through boolean masks, which the exporter turns into Where nodes of the traced
    prompt count; sam2 1.1.0 computes the same sums with torch.where, as here. points [N, P, 2] -> [N, P + 1, C]."""
    count = points.shape[0]
    points = torch.cat([points + 0.5, torch.zeros(count, 1, 2)], dim=1)  # + the padding point at (0, 0)
    labels = torch.cat([labels, -torch.ones(count, 1)], dim=1)[..., None]  # [N, P + 1, 1]
    embedding = prompt_encoder.pe_layer.forward_with_coords(points, prompt_encoder.input_image_size)
    embedding = torch.where(labels == -1, prompt_encoder.not_a_point_embed.weight, embedding)
    for label, table in enumerate(prompt_encoder.point_embeddings):  # labels 0..3: neg, pos, box corners
        embedding = embedding + (labels == label).to(embedding.dtype) * table.weight
    return embedding


class OneLevelBatchDecoderPiece(BatchDecoderPiece):
    """sam2.py's batch decoder (mask 0 the single-mask answer, 1..3 multimask, pointers) on one feature level."""

    def decode(self, image_embed, point_coords, point_labels, mask_input, has_mask_input):
        prompts, decoder = self.model.sam_prompt_encoder, self.model.sam_mask_decoder
        sparse = embed_points(prompts, point_coords, point_labels)  # [N, P + 1, C]
        has_mask = has_mask_input.reshape(-1, 1, 1, 1)
        dense = has_mask * prompts._embed_masks(mask_input) + \
            (1 - has_mask) * prompts.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return predict_masks_one_level(decoder, image_embed, prompts.get_dense_pe(), sparse, dense)


class OneLevelClientDecoderPiece(OneLevelBatchDecoderPiece):
    """decoder.onnx: the three multimask masks (clamped to +-32, as SAM2ImagePredictor) and their scores,
    samexporter's SAM 2 decoder outputs on one feature level. A bundle needs a decoder.onnx
    (runtime/bundle.py); Session and the tracker decode with decoder_batch.onnx."""

    def forward(self, *inputs):
        masks, scores, _, _ = self.decode(*inputs)
        return masks[:, 1:].clamp(-LOGIT_CLAMP, LOGIT_CLAMP), scores[:, 1:]


def _prompt_example(model, prompts: int = 2, points: int = 3) -> tuple:
    grid = model.image_size // EfficientTamConfig.backbone_stride
    generator = torch.Generator().manual_seed(0)
    channels = model.sam_prompt_encoder.embed_dim
    return (torch.randn(1, channels, grid, grid, generator=generator),
            torch.rand(prompts, points, 2, generator=generator) * model.image_size,
            torch.ones(prompts, points), torch.randn(prompts, 1, 4 * grid, 4 * grid, generator=generator),
            torch.ones(prompts))


class EfficientTamFamily(Sam2Family):
    name = "efficient_tam"
    config_class = EfficientTamConfig
    model_types = MODEL_TYPES
    compressions = ("birkhoff",)
    client_format = None  # samexporter's SAM 2 decoder takes three feature levels; this model has one
    fork = EFFICIENT_TAM

    def build(self, config, seed=None):
        with torch.random.fork_rng():  # sam2 initialises from the global generator
            if seed is not None:
                torch.manual_seed(seed)
            model = self.fork.instantiate(model_config(config))
        if seed is not None:
            perturb(model, seed)
        model.eval()
        model.config = config
        return model

    def detect(self, state, model_type=None, name="checkpoint"):
        patch = state.get(TRUNK_KEY)
        if patch is None or NECK_KEY not in state:
            return None  # not a ViT-trunk SAM 2 (Hiera's SAM 2 has no neck.convs.*.conv_1x1)
        blocks = len({key.split(".")[3] for key in state if key.startswith("image_encoder.trunk.blocks.")})
        embed_dim = patch.shape[0]
        if embed_dim not in SIZES or blocks != 12:
            raise CheckpointError(f"an EfficientTAM state dict with ViT embed dim {embed_dim} and {blocks} blocks "
                                  "matches neither ti (192, 12) nor s (384, 12)")
        size = SIZES[embed_dim][0]
        # The image size is not in the shapes (the position table is the 224-px pretraining one):
        # 1024 px unless the caller names a _512 type.
        candidates = [t for t, c in MODEL_TYPES.items() if c.embed_dim == embed_dim]
        if model_type is None:
            return MODEL_TYPES[f"efficienttam_{size}"]
        if model_type not in candidates:
            raise CheckpointError(f"the file holds an EfficientTAM-{size} model, but model type {model_type} was "
                                  f"asked for; pass --model-type one of {candidates}")
        return MODEL_TYPES[model_type]

    def pieces(self, model) -> list[Piece]:
        from .sam2_memory import MemoryAttentionPiece, MemoryEncoderPiece

        size = model.image_size
        grid, channels = size // EfficientTamConfig.backbone_stride, model.sam_prompt_encoder.embed_dim
        low_res, prompts = 4 * grid, "num_prompts"
        memory_encoder, memory_attention = MemoryEncoderPiece(model).eval(), MemoryAttentionPiece(model).eval()
        batch_axes = {**{k: v for k, v in PROMPT_AXES.items()}, **{name: {0: prompts} for name in BATCH_OUTPUTS}}
        batch_shapes = {"iou_predictions": (prompts, 4), "low_res_masks": (prompts, 4, low_res, low_res),
                        "object_score_logits": (prompts, 1), "obj_ptr": (prompts, 4, channels)}
        client_axes = {**PROMPT_AXES, "masks": {0: prompts}, "iou_predictions": {0: prompts}}
        client_shapes = {"masks": (prompts, 3, low_res, low_res), "iou_predictions": (prompts, 3)}
        return [
            Piece("encoder.onnx", ImageEncoderPiece(model).eval(), (torch.zeros(1, 3, size, size),), ("image",),
                  FEATURES, output_shapes={"image_embed": (1, channels, grid, grid)}, role="encoder",
                  tracing=self.fork.active),
            Piece("decoder.onnx", OneLevelClientDecoderPiece(model).eval(), _prompt_example(model),
                  FEATURES + PROMPT_INPUTS, CLIENT_OUTPUTS, client_axes, output_shapes=client_shapes, role="client",
                  tracing=self.fork.active),
            Piece("decoder_batch.onnx", OneLevelBatchDecoderPiece(model).eval(), _prompt_example(model),
                  FEATURES + PROMPT_INPUTS, BATCH_OUTPUTS, batch_axes, output_shapes=batch_shapes, role="decoder",
                  tracing=self.fork.active),
            Piece("memory_encoder.onnx", memory_encoder, memory_encoder.dummy_inputs(), memory_encoder.INPUT_NAMES,
                  memory_encoder.OUTPUT_NAMES, memory_encoder.DYNAMIC_AXES, role="memory", tracing=self.fork.active),
            Piece("memory_attention.onnx", memory_attention, memory_attention.dummy_inputs(),
                  memory_attention.INPUT_NAMES, memory_attention.OUTPUT_NAMES, memory_attention.DYNAMIC_AXES,
                  role="memory", tracing=self.fork.active),
        ]

    def manifest(self, config) -> dict:
        # SAM 2's loop and settings; a config of no SAM 2.1 release: no temporal encoding on the pointers
        # (the published configs' add_tpos_enc_to_obj_ptrs: false).
        tracking = tracking_manifest(SimpleNamespace(config_file=""))
        tracking["memory_takes_object_score"] = False  # no spatial no-object embedding (SAM 2.0's base)
        tracking["predictor"] = ("efficient-track-anything 1.0's SAM2VideoPredictor (sam2's legacy one: "
                                 "objects are added before tracking starts; points, boxes as two points)")
        return {**image_manifest(config, "samedge SAM 2 decoder, one feature level (EfficientTAM)", FEATURES, FEATURES),
                "tracking": tracking}

    def tensors(self, model) -> dict:
        from .sam2 import TRACKING_TENSORS

        with self.fork.active():
            return {TRACKING_TENSORS: tracking_tensors(model)}

    def reference(self, model):
        with self.fork.active() as sam2:
            predictor = sam2_module(sam2, "sam2.sam2_image_predictor").SAM2ImagePredictor(model)
        grid = model.image_size // EfficientTamConfig.backbone_stride
        predictor._bb_feat_sizes = [(4 * grid, 4 * grid), (2 * grid, 2 * grid), (grid, grid)]
        return NumpyPrompts(call_in(self.fork, predictor))

    def reference_mask_generator(self, model, **settings):
        with self.fork.active() as sam2:
            generator = sam2_module(sam2, "sam2.automatic_mask_generator").SAM2AutomaticMaskGenerator(model, **settings)
        grid = model.image_size // EfficientTamConfig.backbone_stride
        generator.predictor._bb_feat_sizes = [(4 * grid, 4 * grid), (2 * grid, 2 * grid), (grid, grid)]
        return call_in(self.fork, generator)

    def video_reference(self, model):
        from .sam2_fork_video import legacy_video_reference

        return legacy_video_reference(self.fork, model)


def sam2_module(package, name: str):
    """`name` of the fork whose package is `package` (imported inside its active block)."""
    import importlib

    del package  # the block is what makes `name` the fork's
    return importlib.import_module(name)


EFFICIENT_TAM_FAMILY = register(EfficientTamFamily())
