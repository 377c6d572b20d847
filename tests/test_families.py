"""The model-family registry: a family registered here, in this file alone, goes through the whole
toolkit (seeded checkpoint, build, Session, parity) with no other file knowing it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from compress import CheckpointError, build_sam, load_checkpoint, seeded_checkpoint
from compress.config_data import ConfigData
from compress.families import (config_for, config_from_dict, config_to_dict, families, family_of, get_family,
                               model_types, register, unregister)
from compress.families.registry import ModelFamily, NumpyPrompts
from compress.families.sam_pieces import batch_decoder_piece, decoder_piece, encoder_piece
from export.build import build_bundle
from runtime import Session
from runtime.parity import run_parity


@dataclass(frozen=True)
class PatchConfig(ConfigData):
    """A made-up family: SAM 1's classes at 64 px with 16-px patches (a 4 x 4 embedding grid)."""

    name: str = "patch16-64"
    img_size: int = 64
    pixel_mean: tuple = (120.0, 120.0, 120.0)
    pixel_std: tuple = (60.0, 60.0, 60.0)

    family: ClassVar[str] = "test-patch16"

    @property
    def embedding_size(self) -> int:
        return self.img_size // 16

    @property
    def low_res_size(self) -> int:
        return 4 * self.embedding_size


class Patch16Family(ModelFamily):
    name = "test-patch16"
    config_class = PatchConfig
    model_types = {"patch16-64": PatchConfig()}
    compressions = ("birkhoff",)

    def build(self, config, seed=None):
        sam_config = config_for("tiny").replace(name=config.name, img_size=config.img_size, patch_size=16,
                                                  window_size=2, pixel_mean=config.pixel_mean,
                                                  pixel_std=config.pixel_std)
        model = build_sam(sam_config, seed)
        model.config = config  # the family's own config: checkpoints and manifests record it
        return model

    def detect(self, state, model_type=None, name="checkpoint"):
        return None  # its checkpoints are samedge's, which record their architecture

    def pieces(self, model):
        return [encoder_piece(model), decoder_piece(model, "decoder.onnx"), batch_decoder_piece(model)]

    def manifest(self, config):
        return {"preprocessing": {"img_size": config.img_size, "pixel_mean": list(config.pixel_mean),
                                  "pixel_std": list(config.pixel_std), "resize_rule": "longest_side"},
                "decoder": {"masks": {"decoder.onnx": 4, "decoder_batch.onnx": 4}, "low_res_size": config.low_res_size,
                            "features": ["image_embeddings"], "prompt_layout": "sam", "official": True}}

    def reference(self, model):
        from segment_anything import SamPredictor

        return NumpyPrompts(SamPredictor(model))


@pytest.fixture(scope="module")
def patch16():
    family = register(Patch16Family())
    yield family
    unregister(family.name)


def test_a_registered_family_goes_through_build_session_and_parity(patch16, tmp_path):
    checkpoint = seeded_checkpoint("patch16-64", tmp_path)
    model = load_checkpoint(checkpoint)
    assert family_of(model.config) is patch16 and model.config == PatchConfig()
    report = build_bundle(tmp_path / "bundle", "cpu", checkpoint)
    assert report["passed"], report["worst"]
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["model"]["family"] == "test-patch16"
    assert sorted(name for name in manifest["files"] if name.endswith(".onnx")) == [
        "decoder.onnx", "decoder_batch.onnx", "encoder.onnx"]
    with Session(tmp_path / "bundle") as session:
        answer = session.predict(np.full((48, 64, 3), 90, np.uint8), points=[[30, 20]], labels=[1])
        assert answer.low_res_logits.shape == (3, 16, 16) and answer.masks.shape == (3, 48, 64)
    again = run_parity(tmp_path / "bundle", images={"grey": np.full((40, 64, 3), 90, np.uint8)},
                       show_progress=False, everything=False)
    assert again["passed"] and again["worst"]["max_relative_logit_diff"] < 1e-4


def test_a_family_refuses_what_it_does_not_take(patch16, tmp_path):
    from compress.recipe import parse_recipe

    checkpoint = seeded_checkpoint("patch16-64", tmp_path)
    with pytest.raises(ValueError, match="slimsam-50 is not available for test-patch16 models; this family takes "
                                         "birkhoff"):
        build_bundle(tmp_path / "b", "cpu", checkpoint, run_parity=False,
                     recipe=parse_recipe("slimsam-50", images=[np.zeros((8, 8, 3), np.uint8)] * 3))


def test_the_first_families_and_their_model_types():
    assert [family.name for family in families()][:2] == ["sam", "sam2"]
    assert {"vit_b", "vit_h", "demo", "tiny", "sam2.1_hiera_t", "sam2.1_hiera_b+", "sam2_hiera_l"} <= set(model_types())
    assert family_of(config_for("sam2.1_hiera_l")) is get_family("sam2")


def test_configs_round_trip_with_their_family():
    for model_type in ("vit_b", "sam2.1_hiera_b+", "sam2.1_hiera_t_256"):
        config = config_for(model_type)
        data = json.loads(json.dumps(config_to_dict(config)))  # as a checkpoint or manifest stores it
        assert config_from_dict(data) == config
    # Files from before families record no family: SAM 1's.
    assert config_from_dict(config_for("vit_b").to_dict()) == config_for("vit_b")


def test_unknown_families_and_clashing_model_types_are_refused():
    with pytest.raises(ValueError, match="unknown model family 'sam9'"):
        config_from_dict({"family": "sam9", "name": "x"})
    clash = Patch16Family()
    clash.name, clash.model_types = "another", {"vit_b": PatchConfig()}
    with pytest.raises(ValueError, match=r"model types \['vit_b'\] of family 'another' are 'sam''s already"):
        register(clash)


def test_a_state_dict_of_no_known_kind_names_both(tmp_path):
    import torch

    path = tmp_path / "other.pth"
    torch.save({"backbone.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match=r"not a state dict of any registered family's kind \(sam, sam2"):
        load_checkpoint(path)
