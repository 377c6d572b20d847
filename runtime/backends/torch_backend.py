"""The PyTorch reference backend: the checkpoint itself, run by its family's upstream code.

It runs the same modules the bundle's ONNX files were traced from (compress/families: SAM 1's
image encoder and segment_anything's SamOnnxModel; SAM 2's pieces), so Session on it answers as
the exported graphs should. Imports torch: runtime.backends opens this module only for backend="torch".
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.utils.onnx import SamOnnxModel

from ..bundle import BundleError
from ..reference import family_manifest, family_pieces, load_reference_model
from ..signature import DECODER_INPUTS, PROMPT_INPUTS
from .base import BackendOptions, BaseBackend


class TorchBackend(BaseBackend):
    name = "torch"
    takes_options = frozenset({"device"})
    batch_decoding = "loop"  # segment_anything has no batch decoder: Session calls decode per prompt set

    @classmethod
    def _open(cls, bundle, options: BackendOptions) -> "TorchBackend":
        if bundle.checkpoint is None:
            raise BundleError(f"the torch backend needs the checkpoint the bundle at {bundle.root} "
                              "was built from, and the manifest names none that exists")
        return cls.from_checkpoint(bundle.checkpoint, options.device)

    def __init__(self, model, device: str = "cpu"):
        self.device = device
        self.model = model.to(device).eval()
        decoder = family_manifest(model.config)["decoder"]
        self.features = tuple(decoder.get("features", ("image_embeddings",)))
        self.decoder_inputs = tuple(decoder.get("decoder_inputs") or (*self.features, *PROMPT_INPUTS))
        self.pieces = family_pieces(self.model)
        self.encoder = self.pieces["encoder.onnx"].module
        if decoder.get("official", True):
            self.decoder = SamOnnxModel(self.model, return_single_mask=False).eval()
            self.batch_decoder = None
        else:  # the family's own batch decoder (SAM 2): the module decoder_batch.onnx was traced from
            self.decoder, self.batch_decoder = None, self.pieces["decoder_batch.onnx"].module
            self.batch_decoding = "native"
        self.img_size = int(model.config.img_size)
        self.embedding_size = int(model.config.embedding_size)

    @classmethod
    def from_checkpoint(cls, checkpoint, device: str = "cpu"):
        return cls(load_reference_model(checkpoint), device)

    def _tensors(self, inputs, names):
        return [torch.from_numpy(np.asarray(inputs[name])).to(self.device) for name in names]

    def encode(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        encoder = self._held(self.encoder)
        with torch.no_grad():
            outputs = encoder(torch.from_numpy(pixels).to(self.device))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        names = self.pieces["encoder.onnx"].output_names  # the encoder's own order (SAM-HQ's is not features')
        return {name: output.cpu().numpy() for name, output in zip(names, outputs)}

    def decode(self, inputs):
        decoder = self._held(self.decoder)
        with torch.no_grad():
            return tuple(t.cpu().numpy() for t in decoder(*self._tensors(inputs, DECODER_INPUTS)))

    def decode_batch(self, inputs):
        if self.batch_decoder is None and not self.closed:
            raise AttributeError("the torch backend of a SAM 1 bundle has no batch decoder: Session loops over decode")
        decoder = self._held(self.batch_decoder)
        with torch.no_grad():
            outputs = decoder(*self._tensors(inputs, self.decoder_inputs))
        return outputs[0].cpu().numpy(), outputs[1].cpu().numpy()

    def run_piece(self, file: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The module the bundle's `file` was traced from, on `feeds` by input name -> outputs by name."""
        piece = self._held(self.pieces).get(file)
        if piece is None:
            raise BundleError(f"this model has no piece {file} (it has {sorted(self.pieces)})")
        with torch.no_grad():
            outputs = piece.module(*self._tensors(feeds, piece.input_names))
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        return {name: output.cpu().numpy() for name, output in zip(piece.output_names, outputs)}

    def _release(self) -> None:
        # The decoders wrap the model: every reference goes, so the weights are freed with them.
        self.model = self.decoder = self.encoder = self.batch_decoder = self.pieces = None
