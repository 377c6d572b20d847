"""What an encoder and a decoder must take and give to work together, checked when opened.

A bundle's files can be swapped by hand (decoder_single.onnx copied over decoder.onnx,
a decoder from a model of another width, encoder.onnx under the decoder's name); ONNX
Runtime would only fail, or answer wrongly, at the first prediction. These checks read
the input and output shapes the backend reports, so they cost nothing at run time.
"""

from __future__ import annotations

from .bundle import BundleError

# The official segment_anything ONNX decoder's inputs and outputs, in order.
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input",
                  "orig_im_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")
# The batch decoder (export/batch_decoder.py: decoder_batch.onnx and the TensorRT decoder): a
# leading prompt axis N, no orig_im_size; the runtime upsamples low_res_masks.
BATCH_DECODER_INPUTS = DECODER_INPUTS[:-1]
BATCH_DECODER_OUTPUTS = DECODER_OUTPUTS[1:]
# A decoder's inputs after the image features (a bundle's `features`: SAM 1's image_embeddings, SAM 2's three).
PROMPT_INPUTS = BATCH_DECODER_INPUTS[1:]
SAM_FEATURES = ("image_embeddings",)
MASKS = 4  # Session's decoder gives the single-mask answer and the three multimask ones
REBUILD = "rebuild the bundle with python -m export.build (or restore the file)"


def _static(shape) -> tuple:
    """Dimensions as ints; names of dynamic ones (ONNX Runtime) and -1 (TensorRT) become None."""
    return tuple(d if isinstance(d, int) and d >= 0 else None for d in shape)


def check_encoder(inputs: dict, outputs: dict, where, img_size: int | None, features=SAM_FEATURES) -> tuple:
    """inputs/outputs: {name: shape}; `features`: the outputs the bundle's decoders take (the last the
    image embedding). Returns the embedding shape [1, C, h, w]."""
    if len(inputs) != 1 or set(outputs) != set(features):
        raise BundleError(f"{where} takes {sorted(inputs)} and gives {sorted(outputs)}: not a SAM image encoder "
                          f"of this bundle (one image in, {list(features)} out); {REBUILD}")
    (image,) = (_static(s) for s in inputs.values())
    embedding = _static(outputs[features[-1]])
    if len(image) == 3 and image[2] == 3:  # encoder_preprocess.onnx: a resized [H, W, 3] image
        if img_size is None:
            raise BundleError(f"{where} takes a resized [H, W, 3] image, which says nothing of the model's size: "
                              "open it inside its bundle (the manifest says), or open the bundle's encoder.onnx")
    elif len(image) != 4 or image[:2] != (1, 3) or image[2] is None or image[2] != image[3]:
        raise BundleError(f"{where} takes input of shape {image}, not a [1, 3, S, S] image (nor the resized "
                          f"[H, W, 3] of encoder_preprocess.onnx): not a SAM image "
                          f"encoder; {REBUILD}")
    elif img_size is not None and image[2] != img_size:
        raise BundleError(f"{where} takes {image[2]} px images but the manifest says img_size {img_size}: the "
                          f"manifest and the encoder do not belong together; {REBUILD}")
    if len(embedding) != 4 or None in embedding:
        raise BundleError(f"{where} gives output of shape {embedding}, not a [1, C, h, w] embedding; {REBUILD}")
    return embedding


def check_decoder(inputs: dict, outputs: dict, where, embedding: tuple, batch: bool = False,
                  features=SAM_FEATURES) -> None:
    """The decoder takes the encoder's features, masks of 4x its grid, and gives all 4 masks.
    `batch`: the batch decoder's signature (a prompt axis, no orig_im_size)."""
    expected_inputs = (*features, *PROMPT_INPUTS) if batch else DECODER_INPUTS
    expected_outputs = BATCH_DECODER_OUTPUTS if batch else DECODER_OUTPUTS
    if set(inputs) != set(expected_inputs) or not set(expected_outputs) <= set(outputs):
        raise BundleError(
            f"{where} takes {list(inputs)[:8]} and gives {list(outputs)[:8]}, not the SAM decoder's "
            f"{list(expected_inputs)} -> {list(expected_outputs)} (another model's file copied over it?); {REBUILD}")
    taken = _static(inputs[features[-1]])
    if taken != embedding:
        raise BundleError(f"{where} takes image embeddings of shape {taken} but the encoder gives {embedding}: "
                          f"the two files come from different models; {REBUILD}")
    low_res = (None if batch else 1, 1, 4 * embedding[2], 4 * embedding[3])
    if _static(inputs["mask_input"]) != low_res:
        raise BundleError(f"{where} takes mask_input of shape {_static(inputs['mask_input'])}, not {low_res}; "
                          f"{REBUILD}")
    masks = _static(outputs["iou_predictions"])[-1]
    if masks != MASKS:
        raise BundleError(f"{where} gives {masks} mask(s) per prompt, not {MASKS} (the single-mask decoder "
                          f"decoder_single.onnx copied over decoder.onnx?); Session needs the 4-mask decoder; "
                          f"{REBUILD}")
