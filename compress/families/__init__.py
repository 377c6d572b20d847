"""Model families (registry.py), registered on import: SAM 1 (sam.py), SAM 2 / 2.1 (sam2.py), and the SAM
zoo: MobileSAM (mobile_sam.py), SAM-HQ (sam_hq.py), EfficientViT-SAM (efficientvit_sam.py), and the sam2 forks
(sam2_forks.py loads them) EfficientTAM (efficient_tam.py) and EdgeTAM (edgetam.py)."""

from . import sam, sam2, sam_pieces  # noqa: F401 (registers the families; SAM 1 and SAM 2 first)
from . import edgetam, efficient_tam, efficientvit_sam, mobile_sam, sam_hq  # noqa: F401,I001
from .registry import (ModelFamily, Piece, build_model, config_for, config_from_dict, config_to_dict, families,
                       family_of, family_of_type, get_family, model_types, register, unregister)

__all__ = ["ModelFamily", "Piece", "build_model", "config_for", "config_from_dict", "config_to_dict", "families",
           "family_of", "family_of_type", "get_family", "model_types", "register", "unregister"]
