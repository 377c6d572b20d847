"""samedge.runtime: run a bundle with no torch; parity against the PyTorch reference."""

from .backends import ClosedError
from .bundle import Bundle, BundleError, open_bundle
from .images import ImageError, load_image
from .prompts import PromptError
from .session import BatchPrediction, Prediction, Session

__all__ = ["BatchPrediction", "Bundle", "BundleError", "ClosedError", "ImageError", "Prediction", "PromptError", "Session",
           "load_image", "open_bundle"]
