"""Model families (registry.py): SAM 1 (sam.py) and SAM 2 / 2.1 (sam2.py), registered on import."""

from . import sam, sam2, sam_pieces  # noqa: F401 (registers the families)
from .registry import (ModelFamily, Piece, build_model, config_for, config_from_dict, config_to_dict, families,
                       family_of, family_of_type, get_family, model_types, register, unregister)

__all__ = ["ModelFamily", "Piece", "build_model", "config_for", "config_from_dict", "config_to_dict", "families",
           "family_of", "family_of_type", "get_family", "model_types", "register", "unregister"]
