"""What a samedge Triton model takes and gives: shared by the model (triton_model.py), the repository
writer (export/triton.py) and the client (runtime/backends/triton_backend.py).

One model, `samedge`, holds a bundle and answers three kinds of request, told apart by their inputs
(docs/formats.md has the full table):

    encode        pixels [1, 3, S, S] float32 (normalised, padded)   -> image_key [1, 32] uint8
    decode_batch  image_key [N, 32] + the batch decoder's prompts    -> iou_predictions [N, 4],
                  (point_coords [N, P, 2], point_labels [N, P],          low_res_masks [N, 4, L, L]
                  mask_input [N, 1, L, L], has_mask_input [N, 1])
    decode        the same for one set, with orig_im_size [1, 2]      -> + masks [1, 4, H, W]
                  (SAM 1's official decoder, which upscales in its graph)
    features      image_key [1, 32] alone                           -> the encoder's outputs

The image embedding is the costly, shareable part: the server keeps it under `image_key`, the
SHA-256 of the pixels, so an image is sent once and prompted many times, and two clients sending
the same image share one embedding. The store is bounded; a key it no longer holds (evicted, or
the server restarted) is refused with UNKNOWN_IMAGE, and the client sends the image again.
Requests are merged by Triton's dynamic batcher: prompt sets on the same image run as one decoder call.
"""

from __future__ import annotations

import hashlib

import numpy as np

MODEL = "samedge"  # the model's name in a repository written by export/triton.py
PIXELS = "pixels"
IMAGE_KEY = "image_key"
KEY_BYTES = 32  # SHA-256
ORIGINAL_SIZE = "orig_im_size"  # only the official decoder takes it
HAS_MASK_INPUT = "has_mask_input"  # [N] for the decoders; [N, 1] on the wire (every input has the batch axis)
BATCH_OUTPUTS = ("iou_predictions", "low_res_masks")
MASKS = "masks"
# Prompt sets per request and per decoder call: Session's PROMPTS_PER_CALL, the TensorRT profile's maximum.
MAX_PROMPTS = 64
MANIFEST_PARAMETER = "samedge_manifest"  # the bundle's manifest, JSON, in the model's config parameters
PROTOCOL_PARAMETER = "samedge_protocol"
PROTOCOL = "1"
# The native flavour (export.triton --flavour onnxruntime|tensorrt): the samedge model (engine "native") runs
# the bundle's models as Triton models of these names' suffixes: encoder, batch decoder, official decoder.
ENGINE_NATIVE = "native"
NATIVE_SUFFIXES = ("_encoder", "_batch_decoder", "_decoder")
ENCODER_INPUT = "image"  # encoder.onnx's input
RECORD = "samedge-repository.json"  # a repository's record of what it holds (export/triton.py)
# The start of the error text of a request naming a key the server does not hold.
UNKNOWN_IMAGE = "samedge: unknown image_key"


class RequestError(ValueError):
    """A request the samedge model refuses; the message names the problem and the fix."""


def image_key(pixels: np.ndarray) -> np.ndarray:
    """[1, 32] uint8: the SHA-256 of the pixels' shape and bytes."""
    digest = hashlib.sha256(repr(pixels.shape).encode() + np.ascontiguousarray(pixels, np.float32).tobytes())
    return np.frombuffer(digest.digest(), np.uint8)[None].copy()


def request_kind(names) -> str:
    """encode, decode, decode_batch or features, from the names of a request's inputs."""
    names = set(names)
    if PIXELS in names:
        if names != {PIXELS}:
            raise RequestError(f"a request with {PIXELS} encodes an image and takes nothing else (it got "
                               f"{sorted(names - {PIXELS})}): send the prompts in a second request with the "
                               f"{IMAGE_KEY} it answers")
        return "encode"
    if IMAGE_KEY not in names:
        raise RequestError(f"a request needs {PIXELS} (to encode an image) or {IMAGE_KEY} (to prompt one); got "
                           f"{sorted(names)}")
    if names == {IMAGE_KEY}:
        return "features"
    return "decode" if ORIGINAL_SIZE in names else "decode_batch"


# ---- video: one stream per Triton sequence (the `<model>_tracker` model, runtime/serving/tracker_model.py) ----
# Each request of a sequence (correlation id = the stream) holds a new frame, prompts on the current frame, or
# both (the frame is tracked first, then the prompts apply to it); the answer is every object's mask logits
# on the current frame, as runtime.stream.StreamTracker gives them. The first request carries Triton's START
# flag (a new tracker), the last its END flag (the tracker freed); a stream idle for the idle limit is freed too.
TRACKER_SUFFIX = "_tracker"
FRAME = "frame"  # uint8 [1, H, W, 3]
PROMPT_OBJECT_IDS = "prompt_object_ids"  # int32 [1, K]
PROMPT_POINTS = "prompt_points"  # float32 [1, K, P, 2], pixels of the frame; rows of label -1 are padding
PROMPT_LABELS = "prompt_labels"  # float32 [1, K, P]: 1 foreground, 0 background, -1 padding
PROMPT_BOXES = "prompt_boxes"  # float32 [1, K, 4] XYXY; a row of NaN: no box for that object
OBJECT_IDS = "object_ids"  # int32 [1, M]
MASK_LOGITS = "mask_logits"  # float32 [1, M, 1, H, W], > 0 inside
FRAME_INDEX = "frame_index"  # int64 [1, 1]: the current frame's number in the stream
STREAMS_HELD = "streams_held"  # int32 [1, 1]: streams this server's tracker holds after this request
START, END, STREAM = "START", "END", "CORRID"  # the sequence batcher's control inputs
UNKNOWN_STREAM = "samedge: unknown stream"
