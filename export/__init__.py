"""samedge.export: ONNX files with the official SAM decoder signature, and deployable bundles."""

from .onnx_export import export_decoder, export_encoder

__all__ = ["export_decoder", "export_encoder"]
