"""samedge.runtime: run a bundle with no torch; parity against the PyTorch reference."""

from .backends import ClosedError
from .bundle import Bundle, BundleError, BundleWarning, open_bundle
from .images import ImageError, ImageWarning, load_image
from .prompts import PromptError, PromptWarning
from .session import BatchPrediction, ParityWarning, Prediction, Session

__all__ = ["BatchPrediction", "Bundle", "BundleError", "BundleWarning", "ClosedError", "ImageError", "ImageWarning",
           "ParityWarning", "Prediction", "PromptError", "PromptWarning", "Session", "load_image", "open_bundle"]
