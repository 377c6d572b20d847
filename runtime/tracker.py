"""SAM 2's tracking step in numpy, around a bundle's pieces (sam2 1.1.0's SAM2Base with its video settings).

The bundle's ONNX files do the networks: encoder.onnx (the frame's features), decoder_batch.onnx (masks,
scores, object score, object pointers), memory_encoder.onnx and memory_attention.onnx
(compress/families/sam2_memory.py). What SAM2Base does around them is here, on its constants
(tracking.safetensors) and the manifest's `tracking` settings:

- which memories a frame reads: every conditioning frame (a frame with prompts) at temporal position 0,
  and the last num_maskmem - 1 tracked frames before it (after it, in reverse) at positions 1..6;
- the object pointers: conditioning frames not ahead of the current one, then up to max_obj_ptrs - 1
  tracked frames before it, each 256-d pointer as 4 tokens of 64, with a sine encoding of its signed
  distance in frames projected to 64 (SAM 2.1);
- the decoder's answer: multimask for 0-1 clicks and on tracked frames (the best-scoring mask and its
  token's pointer), the single mask otherwise; -1024 logits and the no-object pointer where the
  object score is not positive;
- the memory of a frame: from the mask upsampled to the model's input size, binarized on frames the
  user prompted (binarize_mask_from_pts_for_mem_enc), its sigmoid on tracked frames; stored in bfloat16
  (as the video predictor stores it: the parity of later frames depends on that rounding). The manifest's
  memory_layout says its shape: "grid" [1, 64, g, g] (SAM 2), or "tokens" [1, T, 64] (memory_tokens
  latents per frame: EdgeTAM's perceiver), with memory_pos_enc in the same layout.

Used by runtime/video.py (SAM2VideoPredictor's calls) and runtime/stream.py (a live feed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .bundle import BundleError
from .geometry import Square
from .video_frames import frame_resize_square

# The decoder's inputs without clicks: one point at (0, 0) labelled -1 (padding), as SAM2Base passes.
NO_CLICK = (np.zeros((1, 1, 2), np.float32), -np.ones((1, 1), np.float32))
POINTER_TOKENS = 4  # a 256-d object pointer enters memory attention as 4 tokens of 64
SINE_TEMPERATURE = 10000.0  # get_1d_sine_pe's
REQUIRED_TENSORS = ("no_mem_embed", "image_pos_enc", "memory_pos_enc", "maskmem_tpos_enc", "no_obj_ptr",
                    "mask_downsample.weight", "mask_downsample.bias")
POINTER_TIME_TENSORS = ("obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias")  # SAM 2.1's
MEMORY_LAYOUTS = ("grid", "tokens")  # a memory [1, C, g, g] (SAM 2's), or [1, T, C] (a perceiver's latents)


def to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounding to nearest even as torch's .to(torch.bfloat16)."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def from_bfloat16(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def sine_encoding(positions: np.ndarray, dim: int) -> np.ndarray:
    """sam2's get_1d_sine_pe in float32: [P] -> [P, dim] (sines, then cosines)."""
    half = dim // 2
    scales = np.float32(SINE_TEMPERATURE) ** (2 * (np.arange(half, dtype=np.float32) // 2) / np.float32(half))
    angles = positions.astype(np.float32)[:, None] / scales.astype(np.float32)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1).astype(np.float32)


def resize_float(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W] float32 -> [h, w]: torchvision's bilinear resize with antialias=True (Pillow's on "F" images)."""
    height, width = size
    return np.asarray(Image.fromarray(np.asarray(image, np.float32), mode="F").resize((width, height), Image.BILINEAR))


@dataclass
class FrameFeatures:
    """One frame's encoder outputs, shared by every object tracked on it."""

    high_res_0: np.ndarray | None  # [1, 32, 4g, 4g]; None for a one-level model (EfficientTAM, EdgeTAM)
    high_res_1: np.ndarray | None  # [1, 64, 2g, 2g]
    raw: np.ndarray  # [1, 256, g, g]: the stride-16 features the memory pieces take
    embed: np.ndarray  # raw + no_mem_embed: the decoder's input on a frame that reads no memory

    def decoder_feeds(self, pix_feat: np.ndarray) -> dict:
        """The decoder's feature inputs: pix_feat as image_embed, and the high-res levels where the model has them."""
        feeds = {"image_embed": pix_feat}
        if self.high_res_0 is not None:
            feeds.update(high_res_feats_0=self.high_res_0, high_res_feats_1=self.high_res_1)
        return feeds


@dataclass
class FrameOutput:
    """One object's answer on one frame, what memory keeps of it (SAM2VideoPredictor's compact output)."""

    low_res: np.ndarray  # [1, 1, L, L] mask logits; NO_OBJECT where the object is absent
    obj_ptr: np.ndarray  # [1, 256]
    object_score: np.ndarray  # [1, 1] logit: the object is present where > 0
    memory: np.ndarray | None = None  # [1, 64, g, g] bfloat16 bits; None until encoded
    score: float = 1.0  # the chosen mask's predicted IoU


class TrackerModel:
    """A bundle's pieces and constants, and the steps of SAM2Base built from them. Holds no video state."""

    def __init__(self, session):
        from safetensors.numpy import load_file

        bundle = session.bundle
        settings = bundle.tracking
        if settings is None:
            raise BundleError(f"{bundle.root} cannot track: its manifest has no tracking section. Video tracking "
                              "needs a SAM 2 bundle built by this samedge: python -m export.build --checkpoint "
                              "<sam2.1 checkpoint>")
        self.run = getattr(session.backend, "run_piece", None)
        if self.run is None:
            raise BundleError(f"the {session.backend.name} backend cannot run the memory pieces video tracking needs "
                              "(it has no run_piece); use backend='onnxruntime' or 'openvino'")
        tensors_file = bundle.root / settings["tensors"]
        if not tensors_file.is_file():
            raise BundleError(f"{bundle.root} has no {settings['tensors']}, which its manifest names: rebuild the "
                              "bundle with python -m export.build")
        self.constants = load_file(str(tensors_file))
        missing = sorted(set(REQUIRED_TENSORS) - set(self.constants))
        if settings.get("pointer_time") == "signed":
            missing += [name for name in POINTER_TIME_TENSORS if name not in self.constants]
        if missing:
            raise BundleError(f"{tensors_file} lacks {', '.join(missing)} (written by an older samedge): rebuild the "
                              "bundle with python -m export.build")
        self.settings = settings
        self.memory_layout = settings.get("memory_layout", "grid")
        if self.memory_layout not in MEMORY_LAYOUTS:
            raise BundleError(f"{bundle.root}'s manifest has memory_layout {self.memory_layout!r}, which this samedge "
                              f"does not know (it knows {', '.join(MEMORY_LAYOUTS)}): update samedge")
        self.memory_pos = self.memory_tokens(self.constants["memory_pos_enc"][None])  # [T, 64]
        expected = settings.get("memory_tokens")
        if expected is not None and self.memory_pos.shape[0] != int(expected):
            raise BundleError(f"{tensors_file}'s memory_pos_enc holds {self.memory_pos.shape[0]} memory tokens, its "
                              f"manifest says {expected}: rebuild the bundle with python -m export.build")
        self.session = session
        self.img_size = session.img_size
        self.low_res_size = session.low_res_size
        self.num_maskmem = int(settings["num_maskmem"])
        self.max_obj_ptrs = int(settings["max_obj_ptrs"])
        self.stride = int(settings["memory_stride"])
        self.no_object = np.float32(settings["no_object_logit"])
        self.pixel_mean = np.asarray(bundle.pixel_mean, np.float32)[:, None, None] / np.float32(255.0)
        self.pixel_std = np.asarray(bundle.pixel_std, np.float32)[:, None, None] / np.float32(255.0)

    # ---- features -------------------------------------------------------------------------------
    def features(self, rgb: np.ndarray) -> FrameFeatures:
        """uint8 RGB [H, W, 3] -> the frame's features, resized as sam2's video loader resizes."""
        pixels = ((frame_resize_square(rgb, self.img_size) - self.pixel_mean) / self.pixel_std)[None]
        encoded = self.session.backend.encode(pixels.astype(np.float32))
        embed = encoded["image_embed"]
        no_mem = self.constants["no_mem_embed"].reshape(1, -1, 1, 1)
        # The encoder adds no_mem_embed (as the image predictor and samexporter want); memory takes it off.
        # The bundle's features say whether the decoder takes the high-res levels (SAM 2's) or not (one-level forks).
        return FrameFeatures(encoded.get("high_res_feats_0"), encoded.get("high_res_feats_1"), embed - no_mem, embed)

    # ---- the decoder ----------------------------------------------------------------------------
    def decode(self, features: FrameFeatures, pix_feat: np.ndarray, points=None, labels=None, mask_input=None,
               multimask: bool = True) -> FrameOutput:
        """SAM2Base._forward_sam_heads: `points` [1, P, 2] in the S x S frame, `labels` [1, P]; `mask_input`
        [1, 1, L, L] logits or None; `pix_feat` [1, 256, g, g] (memory-conditioned or features.embed)."""
        if points is None:
            points, labels = NO_CLICK
        has_mask = mask_input is not None
        if not has_mask:
            mask_input = np.zeros((1, 1, self.low_res_size, self.low_res_size), np.float32)
        out = self.run("decoder_batch.onnx", {
            **features.decoder_feeds(pix_feat), "point_coords": np.asarray(points, np.float32),
            "point_labels": np.asarray(labels, np.float32),
            "mask_input": np.asarray(mask_input, np.float32), "has_mask_input": np.array([float(has_mask)], np.float32)})
        scores, masks, object_score, pointers = (out["iou_predictions"], out["low_res_masks"],
                                                 out["object_score_logits"], out["obj_ptr"])
        # mask 0: the single-mask answer (token 0's pointer); 1..3: the multimask ones (their own tokens)
        chosen = 1 + int(np.argmax(scores[0, 1:])) if multimask else 0
        present = bool(object_score[0, 0] > 0)
        low_res = masks[:, chosen:chosen + 1] if present else np.full_like(masks[:, :1], self.no_object)
        obj_ptr = pointers[:, chosen] if present else self.constants["no_obj_ptr"][None]
        return FrameOutput(low_res.astype(np.float32), obj_ptr.astype(np.float32), object_score.astype(np.float32),
                           score=float(scores[0, chosen]))

    def mask_as_output(self, features: FrameFeatures, mask: np.ndarray) -> FrameOutput:
        """SAM2Base._use_mask_as_output: a 0/1 mask [S, S] is the answer itself (logits +-10); its pointer
        comes from the decoder prompted with the mask alone (downsampled by the model's 4 x 4 convolution)."""
        scale, bias = (np.float32(v) for v in self.settings["mask_input_logits"])
        mask = np.asarray(mask, np.float32)
        low_res = resize_float(mask * scale + bias, (self.low_res_size, self.low_res_size))[None, None]
        weight, conv_bias = self.constants["mask_downsample.weight"], self.constants["mask_downsample.bias"]
        k = weight.shape[0]
        blocks = mask.reshape(mask.shape[0] // k, k, mask.shape[1] // k, k)
        mask_prompt = (np.einsum("ikjl,kl->ij", blocks, weight) + conv_bias[0])[None, None].astype(np.float32)
        prompted = self.decode(features, features.raw, mask_input=mask_prompt, multimask=False)
        present = float(mask.any())
        obj_ptr = present * prompted.obj_ptr + (1 - present) * self.constants["no_obj_ptr"][None]
        object_score = np.array([[scale * present + bias]], np.float32)
        return FrameOutput(low_res.astype(np.float32), obj_ptr.astype(np.float32), object_score)

    # ---- memory ---------------------------------------------------------------------------------
    def encode_memory(self, features: FrameFeatures, output: FrameOutput, from_prompts: bool) -> np.ndarray:
        """SAM2Base._encode_new_memory on the mask upsampled to S x S: binarized on a prompted frame, its
        sigmoid on a tracked one. Returns the memory in bfloat16 bits [1, 64, g, g]."""
        high_res = self.upscale(output.low_res, (self.img_size, self.img_size))
        if from_prompts and self.settings["binarize_clicked_masks"]:
            probabilities = (high_res > 0).astype(np.float32)
        else:
            probabilities = 1.0 / (1.0 + np.exp(-high_res))
        feeds = {"pix_feat": features.raw, "mask_probs": probabilities.astype(np.float32)}
        # SAM 2.1 marks an occluded object's memory (no_obj_embed_spatial); models from before it (EfficientTAM's
        # SAM 2.0 base) do not, and their memory_encoder.onnx takes no object score (the manifest says).
        if self.settings.get("memory_takes_object_score", True):
            feeds["object_score_logits"] = output.object_score
        out = self.run(self.settings["memory_encoder"], feeds)
        return to_bfloat16(out["maskmem_features"])

    def conditioned(self, features: FrameFeatures, frame_idx: int, cond: dict, non_cond: dict,
                    num_frames: int | None, reverse: bool) -> np.ndarray:
        """SAM2Base._prepare_memory_conditioned_features for a frame that reads memory: `cond` and
        `non_cond` map frame indices to this object's FrameOutputs. Returns pix_feat [1, 256, g, g]."""
        if not cond:
            raise ValueError("an object with no conditioning frame has no memory to track from: add points, a box "
                             "or a mask for it first")
        memories = [(0, output) for output in cond.values()]  # every conditioning frame, position 0
        step = -1 if reverse else 1
        for t_pos in range(1, self.num_maskmem):
            distance = self.num_maskmem - t_pos  # frames back (forward in reverse)
            if distance == 1:
                previous = frame_idx - step
            elif not reverse:
                previous = ((frame_idx - 2) // self.stride) * self.stride - (distance - 2) * self.stride
            else:
                previous = -(-(frame_idx + 2) // self.stride) * self.stride + (distance - 2) * self.stride
            output = non_cond.get(previous)
            if output is not None:
                memories.append((t_pos, output))
        spatial = [self.memory_tokens(from_bfloat16(output.memory)) for _, output in memories]  # [T, 64] each
        tpos = self.constants["maskmem_tpos_enc"]
        spatial_pos = [self.memory_pos + tpos[self.num_maskmem - t_pos - 1] for t_pos, _ in memories]

        pointers, distances = self._pointers(frame_idx, cond, non_cond, num_frames, reverse)
        channels = features.raw.shape[1]
        curr = features.raw.reshape(channels, -1).T[:, None]  # [HW, 1, 256]
        curr_pos = self.constants["image_pos_enc"].reshape(channels, -1).T[:, None]
        out = self.run(self.settings["memory_attention"], {
            "curr": curr, "curr_pos": curr_pos,
            "spatial_mem": np.concatenate(spatial)[:, None].astype(np.float32),
            "spatial_mem_pos": np.concatenate(spatial_pos)[:, None].astype(np.float32),
            "ptr_mem": pointers, "ptr_mem_pos": self._pointer_positions(distances, num_frames)})
        side = features.raw.shape[-1]
        return out["pix_feat_with_mem"][:, 0].T.reshape(1, channels, side, side)

    def memory_tokens(self, memory: np.ndarray) -> np.ndarray:
        """One frame's memory (or its positions) as the tokens memory attention reads: [T, 64]."""
        if self.memory_layout == "tokens":  # [1, T, 64] already
            return memory.reshape(-1, memory.shape[-1])
        return memory.reshape(memory.shape[1], -1).T  # [1, 64, g, g] -> [g*g, 64]

    def _pointers(self, frame_idx, cond, non_cond, num_frames, reverse) -> tuple[np.ndarray, list[int]]:
        """The object-pointer tokens [4P, 1, 64] and each pointer's signed distance in frames."""
        limit = self.max_obj_ptrs if num_frames is None else min(num_frames, self.max_obj_ptrs)
        step = -1 if reverse else 1
        chosen = [((frame_idx - t) * step, output.obj_ptr) for t, output in cond.items()
                  if (t >= frame_idx if reverse else t <= frame_idx)]  # only pointers from the past
        for distance in range(1, limit):
            t = frame_idx - distance * step
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            output = non_cond.get(t)
            if output is not None:
                chosen.append((distance, output.obj_ptr))
        if not chosen:
            return np.zeros((0, 1, 64), np.float32), []
        pointers = np.concatenate([pointer for _, pointer in chosen])  # [P, 256]
        tokens = pointers.reshape(len(chosen), POINTER_TOKENS, -1).reshape(-1, 1, pointers.shape[1] // POINTER_TOKENS)
        return tokens.astype(np.float32), [distance for distance, _ in chosen]

    def _pointer_positions(self, distances: list[int], num_frames: int | None) -> np.ndarray:
        """Each pointer's temporal encoding, repeated for its 4 tokens: [4P, 1, 64]."""
        dim = 64
        if not distances:
            return np.zeros((0, 1, dim), np.float32)
        if self.settings["pointer_time"] == "none":  # SAM 2: no temporal encoding on the pointers
            return np.zeros((POINTER_TOKENS * len(distances), 1, dim), np.float32)
        limit = self.max_obj_ptrs if num_frames is None else min(num_frames, self.max_obj_ptrs)
        weight, bias = self.constants["obj_ptr_tpos_proj.weight"], self.constants["obj_ptr_tpos_proj.bias"]
        positions = np.asarray(distances, np.float32) / np.float32(limit - 1)
        projected = sine_encoding(positions, weight.shape[1]) @ weight.T + bias  # [P, 64]
        return np.repeat(projected, POINTER_TOKENS, axis=0)[:, None].astype(np.float32)

    # ---- sizes ----------------------------------------------------------------------------------
    def upscale(self, low_res: np.ndarray, hw) -> np.ndarray:
        """[B, 1, L, L] logits -> [B, 1, H, W], bilinear (align_corners=False), as the video predictor."""
        return Square.upscale(low_res, self.img_size, hw)
