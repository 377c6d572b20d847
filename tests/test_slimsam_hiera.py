"""SlimSAM on SAM 2's Hiera (compress/slimsam/hiera.py): widths, shapes, checkpoints, export parity,
distillation. sam2.1_hiera_t_256, seeded and perturbed; pruned once at 50 % for the module."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from skimage import data

import compress.families.sam2  # noqa: F401 (registers the family)
from compress.checkpoint import load_checkpoint, save_checkpoint
from compress.errors import CheckpointError
from compress.families import get_family
from compress.families.sam2 import MODEL_TYPES, ImageEncoderPiece
from compress.families.sam2_widths import HieraWidths
from compress.slimsam.distill import LoopSettings, embedding_mse, run_loop, step1_loss
from compress.slimsam.hiera import HieraTarget, features, prune_bottlenecks, prune_stages, widths_of
from compress.slimsam.images import preprocess_images
from compress.slimsam.importance import accumulate_gradients, make_importance
from export.build import build_bundle
from runtime.parity import run_parity

HALF = HieraWidths(stages=(48, 96, 192, 384), attn=(48, 96, 96) + (192,) * 7 + (384, 384),
                   mlp=(192, 384, 384) + (768,) * 7 + (1536, 1536))  # hiera_t at 50 %: every width halved


@pytest.fixture(scope="module")
def teacher():
    return get_family("sam2").build(MODEL_TYPES["sam2.1_hiera_t_256"], seed=0)


@pytest.fixture(scope="module")
def photos(teacher):
    arrays = [data.astronaut()[::2, ::3].copy(), data.coffee(), data.chelsea()]
    return preprocess_images(arrays, teacher.config)


@pytest.fixture(scope="module")
def step1(teacher, photos):
    """The step-1 (stage widths) student, pruned with disturbed Taylor scores on one photo."""
    source = features(teacher.image_encoder).eval()
    student = features(teacher.image_encoder)
    accumulate_gradients(student, source, photos[:1], disturb=True, show_progress=False)
    prune_stages(student, 0.5, make_importance("disturbed-taylor", "mean"), photos[0])
    student.zero_grad(set_to_none=True)
    return source, student


@pytest.fixture(scope="module")
def pruned(teacher, step1, photos):
    """Both steps at 50 %: the pruned SAM 2 (sam2's modules, narrower)."""
    _, student = step1
    student = features(HieraTarget().model(teacher, student, "s1").image_encoder)
    prune_bottlenecks(student, 0.5, make_importance("random", "gaussian"), photos[0])
    return HieraTarget().model(teacher, student, "sam2.1_hiera_t_256-slim50")


@pytest.fixture(scope="module")
def checkpoint(pruned, tmp_path_factory):
    path = tmp_path_factory.mktemp("slim") / "slim50.safetensors"
    save_checkpoint(pruned, path)
    return path


def _features(model, image):
    with torch.no_grad():
        return ImageEncoderPiece(model)(image)


def test_step1_prunes_each_stage_width_by_the_ratio(step1):
    _, student = step1
    assert widths_of(student).stages == HALF.stages
    assert widths_of(student).attn[0] == 96  # step 1 leaves q/k/v and the MLP alone


def test_pruning_gives_the_published_rule_and_a_model_that_runs(pruned, teacher, photos):
    assert pruned.config.hiera_widths == HALF
    assert sum(p.numel() for p in pruned.image_encoder.parameters()) < \
        0.3 * sum(p.numel() for p in teacher.image_encoder.parameters())
    assert all(b.attn.num_heads == t.attn.num_heads for b, t in zip(pruned.image_encoder.trunk.blocks,
                                                                     teacher.image_encoder.trunk.blocks))
    ours, theirs = _features(pruned, photos[1]), _features(teacher, photos[1])
    assert all(torch.isfinite(o).all() and o.std() > 0 for o in ours)
    assert not torch.allclose(ours[-1], theirs[-1])  # narrower, so not the teacher


def test_every_hiera_output_keeps_its_shape(pruned, teacher, photos):
    with torch.no_grad():
        ours, theirs = pruned.image_encoder(photos[0]), teacher.image_encoder(photos[0])
    for key in ("backbone_fpn", "vision_pos_enc"):
        assert [o.shape for o in ours[key]] == [t.shape for t in theirs[key]]
    assert ours["vision_features"].shape == theirs["vision_features"].shape
    assert [o.shape for o in _features(pruned, photos[0])] == [t.shape for t in _features(teacher, photos[0])]


def test_a_pruned_model_saves_and_loads(pruned, checkpoint, photos, tmp_path):
    loaded = load_checkpoint(checkpoint)
    assert loaded.config == pruned.config
    for ours, theirs in zip(_features(loaded, photos[2]), _features(pruned, photos[2])):
        assert torch.equal(ours, theirs)
    # A plain state dict (sam2's layout): the widths are read from the shapes.
    plain = tmp_path / "slim.pt"
    torch.save({"model": pruned.state_dict()}, plain)
    assert load_checkpoint(plain).config.hiera_widths == HALF
    with pytest.raises(CheckpointError, match="neighbouring stages must differ"):
        get_family("sam2").build(pruned.config.replace(hiera_stage_dims=(48, 48, 192, 384)))


def test_the_exported_pruned_model_passes_parity_and_a_broken_reference_fails(checkpoint, tmp_path):
    bundle = tmp_path / "bundle"
    build_bundle(bundle, "cpu", checkpoint, run_parity=False, with_clients=False)
    photo = {"astronaut": data.astronaut()[::2, ::3].copy()}
    report = run_parity(bundle, images=photo, show_progress=False, everything=False, video=False)
    assert report["passed"], report["worst"]
    assert report["worst"]["max_relative_logit_diff"] < 1e-4
    # The same bundle against a reference whose one pruned q/k/v row moved: parity must see it.
    broken = load_checkpoint(checkpoint)
    with torch.no_grad():
        broken.image_encoder.trunk.blocks[5].attn.qkv.weight[:8] *= -3.0
    broken_path = tmp_path / "broken.safetensors"
    save_checkpoint(broken, broken_path)
    report = run_parity(bundle, broken_path, images=photo, show_progress=False, everything=False, video=False)
    assert not report["passed"]


def test_two_distillation_steps_lower_the_loss(step1, photos):
    """Bottleneck aligning (step 1's loss: embedding + q/k/v/MLP features) on one photo, two steps."""
    source, pruned_student = step1
    student = copy.deepcopy(pruned_student)  # the module's pruned model stays as pruned
    before = embedding_mse(student, source, photos[:1])
    settings = LoopSettings(epochs=2, lr=1e-4, batch_size=1, accumulate=1, patience=3, seed=0,
                            show_progress=False, state_path=None)
    run_loop(student, photos[:1], step1_loss(source, feature_epochs=1),
             lambda: embedding_mse(student, source, photos[:1]), settings)
    after = embedding_mse(student, source, photos[:1])
    assert np.isfinite(after) and after < 0.98 * before, (before, after)
