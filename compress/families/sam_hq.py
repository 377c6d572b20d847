"""The SAM-HQ family (segment-anything-hq 0.3: HQ-SAM's ViT-B/L/H and its TinyViT "light" model).

HQ-SAM is SAM with one more output token (the HQ token) whose mask is read from a finer feature map:
the decoder's upscaled embedding refined by a small convolution, plus the image embedding and an early
encoder feature (the first global-attention block's output, `interm_embeddings`) each upscaled 4x. So
its image encoder gives two features, and its decoder takes both. A bundle holds:

    encoder.onnx          image [1, 3, S, S] -> image_embeddings [1, 256, g, g], interm_embeddings
                          [1, 1, g, g, D] (g = S / 16; D the ViT's width, 160 for TinyViT; SAM-HQ's own
                          ONNX export's names and layout, [layers, 1, g, g, D], with only the layer the
                          decoder reads: the other three are never used and would triple the feature memory)
    decoder.onnx          SAM-HQ's own ONNX decoder (segment_anything_hq.utils.onnx.SamOnnxModel as its
                          export script builds it: single mask, SAM's mask 0 + the HQ mask), for clients:
                          image_embeddings, interm_embeddings (any number of layers), then the official
                          SAM decoder's prompt inputs -> masks, iou_predictions, low_res_masks
    decoder_batch.onnx    image_embeddings, interm_embeddings, point_coords [N, P, 2], point_labels [N, P],
                          mask_input [N, 1, 4g, 4g], has_mask_input [N] -> iou_predictions [N, 4],
                          low_res_masks [N, 4, 4g, 4g]: each of SAM's four masks plus the HQ mask

What the upstream predictor answers (SamPredictor.predict, hq_token_only=False, its default): with
multimask_output the best-scored of masks 1..3 alone, else mask 0, each plus the HQ mask; the manifest
says so ("multimask": "best", "hq_token_only": false) and runtime.Session answers the same. Pixels and
prompts are SAM 1's (longest side resized, zero padding; box corners after the points).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from torch import nn

from runtime.signature import PROMPT_INPUTS, DECODER_OUTPUTS

from ..architectures import SAM_PIXEL_MEAN, SAM_PIXEL_STD
from ..config_data import ConfigData
from ..errors import CheckpointError
from .batch_norm import float_step_counters, float_step_counters_in_state
from .mobile_sam import fresh_bias_table
from .registry import ModelFamily, NumpyPrompts, Piece, register
from .sam2 import perturb
from .sam_attention import banded_global_attention

RESIZE = "longest_side"  # SAM's ResizeLongestSide, as SAM 1 (runtime/geometry.py)
HQ_TOKEN_ONLY = False  # SamPredictor.predict's default: SAM's mask corrected by the HQ mask, not the HQ mask alone
ENCODER_OUTPUTS = ("image_embeddings", "interm_embeddings")  # SAM-HQ's ONNX encoder's outputs, in its order
# The decoders' feature inputs as the runtime lists them: the image embedding last (runtime.signature).
FEATURES = ("interm_embeddings", "image_embeddings")
DECODER_FEATURES = ENCODER_OUTPUTS  # SAM-HQ's ONNX decoder's first inputs, in its order
BATCH_OUTPUTS = ("iou_predictions", "low_res_masks")
PROMPT_AXES = {"point_coords": {0: "num_prompts", 1: "num_points"}, "point_labels": {0: "num_prompts", 1: "num_points"},
               "mask_input": {0: "num_prompts"}, "has_mask_input": {0: "num_prompts"},
               "iou_predictions": {0: "num_prompts"}, "low_res_masks": {0: "num_prompts"}}
TINY_VIT = "tiny_vit"
# segment_anything_hq's TinyViT (build_sam_vit_t): its third stage's width feeds the HQ decoder, and its
# forward hard-codes the 64 x 64 grid of 1024 px.
TINY_VIT_SETTINGS = dict(embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2], num_heads=[2, 4, 5, 10],
                         window_sizes=[7, 7, 14, 7])
TINY_VIT_DIM = 160


@dataclass(frozen=True)
class SamHqConfig(ConfigData):
    """An HQ-SAM architecture as data: SAM's ViT (or upstream's TinyViT) and the HQ mask decoder."""

    name: str
    encoder: str = "vit"  # "vit": segment_anything's ImageEncoderViT; "tiny_vit": upstream's TinyViT (1024 px)
    img_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD

    family: ClassVar[str] = "sam_hq"

    @property
    def vit_dim(self) -> int:
        """Channels of interm_embeddings: the encoder's width where the HQ decoder reads it."""
        return TINY_VIT_DIM if self.encoder == TINY_VIT else self.encoder_embed_dim

    @property
    def embedding_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        return 4 * self.embedding_size


def _vit(name, embed_dim, depth, heads, global_blocks) -> SamHqConfig:
    return SamHqConfig(name=name, encoder_embed_dim=embed_dim, encoder_depth=depth, encoder_num_heads=heads,
                       encoder_global_attn_indexes=global_blocks)


OFFICIAL = {config.name: config for config in (
    _vit("sam_hq_vit_b", 768, 12, 12, (2, 5, 8, 11)),
    _vit("sam_hq_vit_l", 1024, 24, 16, (5, 11, 17, 23)),
    _vit("sam_hq_vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    SamHqConfig(name="sam_hq_vit_tiny", encoder=TINY_VIT, encoder_embed_dim=TINY_VIT_DIM, encoder_depth=12,
                encoder_num_heads=5, encoder_global_attn_indexes=(), window_size=7),
)}
MODEL_TYPES = dict(OFFICIAL)
# The real classes, small enough for tests (Birkhoff encodes it in seconds): SAM 1's demo widths at 256 px, a
# ViT of 4 blocks (the 2nd and 4th global, so the HQ decoder's early feature is not the encoder's last).
MODEL_TYPES["sam_hq_test"] = _vit("sam_hq_test", 192, 4, 3, (1, 3)).replace(
    img_size=256, window_size=8, prompt_embed_dim=128, decoder_mlp_dim=512, decoder_num_heads=4)


def build_sam_hq(config: SamHqConfig, seed: int | None = None):
    """segment_anything_hq's Sam (eval mode, `.config` set) of `config`; seeded, perturbed weights with `seed`."""
    from segment_anything_hq.modeling import (ImageEncoderViT, MaskDecoderHQ, PromptEncoder, Sam, TinyViT,
                                              TwoWayTransformer)

    if seed is not None:
        torch.manual_seed(seed)
    if config.encoder == TINY_VIT:
        if config.img_size != 1024:
            raise ValueError("segment_anything_hq's TinyViT takes 1024 px images only (its forward fixes the grid)")
        encoder = TinyViT(img_size=1024, in_chans=3, num_classes=1000, mlp_ratio=4.0, drop_rate=0.0,
                          drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                          layer_lr_decay=0.8, **TINY_VIT_SETTINGS)
        _eval_ready_tiny_vit(encoder)
    else:
        encoder = ImageEncoderViT(
            depth=config.encoder_depth, embed_dim=config.encoder_embed_dim, img_size=config.img_size, mlp_ratio=4,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), num_heads=config.encoder_num_heads,
            patch_size=config.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=list(config.encoder_global_attn_indexes), window_size=config.window_size,
            out_chans=config.prompt_embed_dim)
    grid = config.embedding_size
    model = Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=config.prompt_embed_dim, image_embedding_size=(grid, grid),
                                     input_image_size=(config.img_size, config.img_size), mask_in_chans=16),
        mask_decoder=MaskDecoderHQ(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=config.prompt_embed_dim,
                                          mlp_dim=config.decoder_mlp_dim, num_heads=config.decoder_num_heads),
            transformer_dim=config.prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=256,
            vit_dim=config.vit_dim),
        pixel_mean=list(config.pixel_mean), pixel_std=list(config.pixel_std),
    )
    if seed is not None:
        # Relative-position tables start at zero, LayerNorms at 1 and 0, and the HQ layers as initialised:
        # seeded noise on everything, so that no part of the graph can be wrong unseen.
        perturb(model, seed)
    model.eval()
    model.config = config
    return model


def _eval_ready_tiny_vit(encoder) -> None:
    """SAM-HQ's TinyViT copy has MobileSAM's stale bias table (mobile_sam.fresh_bias_table says why)."""
    from segment_anything_hq.modeling.tiny_vit_sam import Attention

    for module in encoder.modules():
        if isinstance(module, Attention):
            module.register_forward_pre_hook(fresh_bias_table)
    float_step_counters(encoder)


def _count(state: dict, prefix: str) -> int:
    return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})


def detect_official_type(state: dict) -> str | None:
    """Which official HQ-SAM a state dict has, from its shapes (None: none of them)."""
    vit_dim = state["mask_decoder.compress_vit_feat.0.weight"].shape[0]  # ConvTranspose2d: [in, out, 2, 2]
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if patch is None:  # TinyViT: a convolution stem, and stages (layers.N) instead of blocks
        tiny = "image_encoder.layers.0.blocks.0.conv1.c.weight" in state and vit_dim == TINY_VIT_DIM
        return "sam_hq_vit_tiny" if tiny else None
    depth = _count(state, "image_encoder.blocks.")
    for name, config in OFFICIAL.items():
        if config.encoder != TINY_VIT and (config.encoder_embed_dim, config.encoder_depth) == (patch.shape[0], depth):
            return name if vit_dim == patch.shape[0] else None
    return None


class SamHqFamily(ModelFamily):
    name = "sam_hq"
    config_class = SamHqConfig
    model_types = MODEL_TYPES
    compressions = ("birkhoff",)
    client_format = None  # no client files yet: export/clients.py has no SAM-HQ writer (see the report)

    def build(self, config, seed=None):
        return build_sam_hq(config, seed)

    def detect(self, state, model_type=None, name="checkpoint"):
        # SAM-HQ's own tensors: its HQ output token and the fusion of the early ViT feature.
        if "mask_decoder.hf_token.weight" not in state or "mask_decoder.compress_vit_feat.0.weight" not in state:
            return None
        detected = detect_official_type(state)
        if detected == "sam_hq_vit_tiny":
            float_step_counters_in_state(state)  # in place: the state dict that is checked and loaded next
        if detected is None:
            if model_type in MODEL_TYPES and model_type not in OFFICIAL:
                return MODEL_TYPES[model_type]  # the caller's architecture; strict loading checks it
            raise CheckpointError(f"a SAM-HQ state dict that matches none of {sorted(OFFICIAL)} (by the encoder's "
                                  "width and depth); pass a samedge checkpoint that records its architecture")
        if model_type is not None and model_type != detected:
            raise CheckpointError(f"the file holds a {detected} model, but model type {model_type} was asked for; "
                                  f"pass --model-type {detected}")
        return OFFICIAL[detected]

    def refusal(self, compression):
        if "slimsam" in compression:
            return (f"--compress {compression}: SlimSAM's recipes prune and distil SAM 1 (its encoder against "
                    "SAM's decoder); HQ-SAM's decoder also reads an early encoder feature, which those recipes do "
                    "not keep. Use --compress birkhoff, or --quantize on the bundle")
        return super().refusal(compression)

    def pieces(self, model) -> list[Piece]:
        config = model.config
        size, grid, channels = config.img_size, config.embedding_size, config.prompt_embed_dim
        encoder = model.image_encoder
        tracing = (lambda: banded_global_attention(encoder)) if config.encoder != TINY_VIT else None
        feature_shapes = {"image_embeddings": (1, channels, grid, grid),
                          "interm_embeddings": (1, 1, grid, grid, config.vit_dim)}
        encoder_piece = Piece("encoder.onnx", ImageEncoderPiece(model).eval(), (torch.zeros(1, 3, size, size),),
                              ("image",), ENCODER_OUTPUTS, output_shapes=feature_shapes, role="encoder")
        if tracing is not None:
            encoder_piece.tracing = tracing
        example = _decoder_example(model)
        client_inputs = (*DECODER_FEATURES, *PROMPT_INPUTS, "orig_im_size")
        client_example = tuple(example[name] for name in client_inputs)
        batch_inputs = (*DECODER_FEATURES, *PROMPT_INPUTS)
        return [
            encoder_piece,
            Piece("decoder.onnx", _client_decoder(model), client_example, client_inputs, DECODER_OUTPUTS,
                  {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"},
                   "interm_embeddings": {0: "num_layers"}}, role="client"),
            Piece("decoder_batch.onnx", BatchDecoderPiece(model).eval(),
                  tuple(_batch_example(example)[name] for name in batch_inputs), batch_inputs, BATCH_OUTPUTS,
                  PROMPT_AXES, role="decoder"),
        ]

    def manifest(self, config) -> dict:
        return {
            "preprocessing": {"img_size": config.img_size, "pixel_mean": list(config.pixel_mean),
                              "pixel_std": list(config.pixel_std), "resize_rule": RESIZE,
                              "resize": "longest side to img_size, Pillow bilinear; pad bottom/right with zeros"},
            "decoder": {"signature": "samedge SAM-HQ decoder (decoder.onnx: SAM-HQ's own ONNX decoder, single mask)",
                        "masks": {"decoder.onnx": 1, "decoder_batch.onnx": 4}, "batch": "decoder_batch.onnx",
                        "low_res_size": config.low_res_size, "features": list(FEATURES),
                        "decoder_inputs": [*DECODER_FEATURES, *PROMPT_INPUTS], "prompt_layout": "sam",
                        "official": False,
                        # SamPredictor.predict's answers: with multimask_output the best-scored of masks 1..3
                        # alone; every mask is SAM's plus the HQ token's (hq_token_only=False, its default).
                        "multimask": "best", "hq_token_only": HQ_TOKEN_ONLY},
        }

    def reference(self, model):
        from segment_anything_hq import SamPredictor

        return NumpyPrompts(SamPredictor(model))  # hq_token_only: its default, as the bundle's

    def reference_mask_generator(self, model, **settings):
        from segment_anything_hq import SamAutomaticMaskGenerator

        return SamAutomaticMaskGenerator(model, **settings)


class ImageEncoderPiece(nn.Module):
    """image [1, 3, S, S] -> image_embeddings [1, C, g, g], interm_embeddings [1, 1, g, g, D]: what
    SamPredictor.set_image keeps (features, interm_features), of which the decoder reads the first layer."""

    def __init__(self, model):
        super().__init__()
        self.encoder = model.image_encoder

    def forward(self, image):
        embeddings, interm = self.encoder(image)  # interm: [1, g, g, D] per global block (TinyViT: one)
        return embeddings, interm[0].unsqueeze(0)


def hq_features(decoder, image_embeddings, interm_embeddings):
    """MaskDecoderHQ's HQ feature map [1, C/8, 4g, 4g]: the embedding and the early ViT feature, each upscaled."""
    vit_features = interm_embeddings[0].permute(0, 3, 1, 2)  # [1, D, g, g]
    return decoder.embedding_encoder(image_embeddings) + decoder.compress_vit_feat(vit_features)


def predict_masks(decoder, image_embeddings, image_pe, sparse, dense, features):
    """MaskDecoderHQ.predict_masks for one image and N prompt sets, the image's tensors broadcast against the
    prompt sets (upstream repeats them: a OneHot in ONNX that TensorRT rejects). image_embeddings, image_pe
    [1, C, g, g]; sparse [N, T, C]; dense [N, C, g, g]; features (hq_features) [1, C/8, 4g, 4g].
    Returns SAM's masks [N, 4, 4g, 4g], the HQ mask [N, 1, 4g, 4g] and the scores [N, 4]."""
    sam_masks = decoder.num_mask_tokens - 1  # 4: upstream counts the HQ token among the mask tokens
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight, decoder.hf_token.weight], dim=0)
    tokens = torch.cat([output_tokens.unsqueeze(0).expand(sparse.shape[0], -1, -1), sparse], dim=1)
    src = image_embeddings + dense  # [N, C, g, g]
    _, channels, height, width = src.shape
    hs, src = decoder.transformer(src, image_pe, tokens)  # the image positions broadcast too
    mask_tokens = hs[:, 1: 1 + decoder.num_mask_tokens, :]  # [N, 5, C]: SAM's four, then the HQ token
    upscaled_sam = decoder.output_upscaling(src.transpose(1, 2).reshape(-1, channels, height, width))
    upscaled_hq = decoder.embedding_maskfeature(upscaled_sam) + features  # [N, C/8, 4g, 4g]
    hyper_sam = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
                            dim=1)  # [N, 4, C/8]
    hyper_hq = decoder.hf_mlp(mask_tokens[:, sam_masks, :]).unsqueeze(1)  # [N, 1, C/8]
    _, up_channels, up_height, up_width = upscaled_sam.shape
    masks = hyper_sam @ upscaled_sam.reshape(-1, up_channels, up_height * up_width)
    hq_mask = hyper_hq @ upscaled_hq.reshape(-1, up_channels, up_height * up_width)
    return (masks.reshape(-1, sam_masks, up_height, up_width), hq_mask.reshape(-1, 1, up_height, up_width),
            decoder.iou_prediction_head(hs[:, 0, :]))


class BatchDecoderPiece(nn.Module):
    """All four of SAM's answers per prompt set, each with the HQ mask added (hq_token_only=False): the
    runtime picks mask 0, or the best-scored of 1..3, as SamPredictor does."""

    def __init__(self, model):
        super().__init__()
        from segment_anything_hq.utils.onnx import SamOnnxModel

        self.prompts = SamOnnxModel(model)  # its point and mask embeddings: the official decoder's inputs
        self.model = model

    def forward(self, image_embeddings, interm_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        decoder, prompt_encoder = self.model.mask_decoder, self.model.prompt_encoder
        sparse = self.prompts._embed_points(point_coords, point_labels)  # [N, P, C]
        # Upstream multiplies by has_mask_input [1]; one flag per prompt set must meet its own row.
        dense = self.prompts._embed_masks(mask_input, has_mask_input.reshape(-1, 1, 1, 1))
        features = hq_features(decoder, image_embeddings, interm_embeddings)
        masks, hq_mask, scores = predict_masks(decoder, image_embeddings, prompt_encoder.get_dense_pe(), sparse, dense,
                                               features)
        return scores, masks + hq_mask if not HQ_TOKEN_ONLY else hq_mask.expand_as(masks)


def _client_decoder(model):
    """SAM-HQ's own ONNX decoder as its export script builds it by default (single mask, hq_token_only False)."""
    from segment_anything_hq.utils.onnx import SamOnnxModel

    return SamOnnxModel(model, hq_token_only=HQ_TOKEN_ONLY, multimask_output=False).eval()


def _decoder_example(model) -> dict:
    """Example inputs of SAM-HQ's ONNX decoder (by name)."""
    config = model.config
    grid, size = config.embedding_size, config.img_size
    generator = torch.Generator().manual_seed(0)
    return {
        "image_embeddings": torch.randn(1, config.prompt_embed_dim, grid, grid, generator=generator),
        "interm_embeddings": torch.randn(1, 1, grid, grid, config.vit_dim, generator=generator),
        "point_coords": torch.randint(0, size, (1, 5, 2), generator=generator).float(),
        "point_labels": torch.randint(0, 4, (1, 5), generator=generator).float(),
        "mask_input": torch.randn(1, 1, 4 * grid, 4 * grid, generator=generator),
        "has_mask_input": torch.tensor([1.0]),
        "orig_im_size": torch.tensor([float(size + size // 2), float(size * 2)]),
    }


def _batch_example(example: dict, prompts: int = 3) -> dict:
    """`prompts` sets of the single example's prompts."""
    repeated = {name: example[name].expand(prompts, *example[name].shape[1:]).clone()
                for name in ("point_coords", "point_labels", "mask_input")}
    return {**example, **repeated, "has_mask_input": torch.ones(prompts)}


SAM_HQ = register(SamHqFamily())
