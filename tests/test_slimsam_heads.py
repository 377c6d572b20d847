"""SlimSAM's whole-head pruning (step 2, attention="heads"; compress/slimsam/prune.py): the rule, which
heads stay, the relative-position slices, checkpoints, recipe names, refusals, CLI and an exported bundle.
Seeded models are perturbed after building, so no two channels or heads score alike by construction."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention

import compress.families.sam2  # noqa: F401 (registers the family)
from compress import build_sam, load_checkpoint
from compress.families import get_family
from compress.families.sam2 import MODEL_TYPES
from compress.recipe import COMPRESSIONS, SlimSAM, parse_recipe
from compress.slimsam.__main__ import main as slimsam_main
from compress.slimsam.attention import SplitAttention, split_attention
from compress.slimsam.images import synthetic_images
from compress.slimsam.importance import accumulate_gradients, make_importance
from compress.slimsam.pipeline import slim
from compress.slimsam.prune import (HeadLayout, encoder_widths, head_dim_width, prune_bottleneck, prune_embedding,
                                    whole_heads_layout)
from compress.slimsam.settings import HEADS, SlimSettings
from compress.slimsam.targets import config_for, target_for, with_encoder
from export.build import build_bundle
from export.build import main as build_main
from tests.conftest import DEMO_CHECKPOINT
from tests.slimsam_checks import assert_saves_loads_and_exports


def _perturbed(model, seed: int = 1, scale: float = 0.02):
    """Seeded weights plus noise: layers cloned at build time no longer start alike."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return model


def _split_encoder(model_type, seed: int = 0):
    sam = _perturbed(build_sam(model_type, seed=seed))
    encoder = copy.deepcopy(sam.image_encoder)
    split_attention(encoder)
    return sam, encoder


def _example(sam) -> torch.Tensor:
    size = sam.config.img_size
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))


def test_layout_rule_keeps_the_head_dim_recipes_width():
    # vit_b: 12 heads of 64; vit_l 16 of 64; vit_h 16 of 80; the demo model 3 of 64.
    assert head_dim_width(12, 64, 0.77) == 168 and head_dim_width(12, 64, 0.5) == 384
    assert whole_heads_layout(12, 64, 0.77) == HeadLayout(3, 56, False)
    assert whole_heads_layout(12, 64, 0.5) == HeadLayout(6, 64, False)
    assert whole_heads_layout(16, 64, 0.77) == HeadLayout(4, 56, False)
    assert whole_heads_layout(16, 80, 0.77) == HeadLayout(4, 72, False)
    assert whole_heads_layout(3, 64, 0.5) == HeadLayout(2, 48, False)
    assert whole_heads_layout(3, 64, 0.77) == HeadLayout(1, 42, False)
    # 10 x (1 - 0.7) is 3.0000000000000004 in floats: still 3 heads. Width 10 x 19 = 190 does not
    # divide by 3: 63 per head, rounded down to a multiple of 2, said in a warning.
    with pytest.warns(UserWarning, match="multiple of 2"):
        assert whole_heads_layout(10, 64, 0.7) == HeadLayout(3, 62, True)
    with pytest.raises(ValueError, match="no head dims"):
        whole_heads_layout(2, 4, 0.9)


def test_vit_b_blocks_become_3_heads_of_56_with_the_published_mlp_width():
    """vit_b's widths in two blocks at 128 px (the rule does not depend on depth or image size)."""
    config = build_sam("vit_b").config.replace(name="vit_b-2", img_size=128, encoder_depth=2,
                                               encoder_global_attn_indexes=(1,))
    sam, encoder = _split_encoder(config)
    example = _example(sam)
    with torch.no_grad():
        shape = encoder(example).shape
    prune_bottleneck(encoder, 0.77, make_importance("random", "gaussian"), example, attention=HEADS)
    widths = encoder_widths(encoder)
    assert widths.qkv == [168, 168] and widths.mlp == [696, 696]  # MLP rounded to the 12 heads it had, as published
    for block in encoder.blocks:
        attn = block.attn
        assert (attn.num_heads, attn.head_dim) == (3, 56) and attn.scale == pytest.approx(56**-0.5)
        assert attn.rel_pos_h.shape[1] == attn.rel_pos_w.shape[1] == 56
    with torch.no_grad():
        assert encoder(example).shape == shape


def _channels(pruned: torch.Tensor, original: torch.Tensor) -> list[int]:
    """Which rows of `original` the rows of `pruned` are (exact copies, as torch-pruning makes them)."""
    matches = [(original == row).all(dim=1).nonzero().view(-1).tolist() for row in pruned]
    assert all(len(m) == 1 for m in matches)
    return [m[0] for m in matches]


def test_importance_chooses_the_heads_and_relative_positions_are_the_kept_columns():
    """Demo model (3 heads of 64) at 50 %: 2 heads of 48. Head 1 zeroed in every block scores 0 under
    disturbed Taylor (|W dL/dW|), so heads 0 and 2 stay; the kept dims are the same in both."""
    sam, encoder = _split_encoder("demo")
    head_dim = encoder.blocks[0].attn.head_dim
    dropped = slice(head_dim, 2 * head_dim)
    with torch.no_grad():
        for block in encoder.blocks:
            for layer in (block.attn.q, block.attn.k, block.attn.v):
                layer.weight[dropped] = 0
                layer.bias[dropped] = 0
            block.attn.proj.weight[:, dropped] = 0
    original = copy.deepcopy(encoder)
    example = _example(sam)
    accumulate_gradients(encoder, copy.deepcopy(encoder), [example], disturb=True, show_progress=False)
    prune_bottleneck(encoder, 0.5, make_importance("disturbed-taylor", "gaussian"), example, attention=HEADS)
    for block, before in zip(encoder.blocks, original.blocks):
        attn, old = block.attn, before.attn
        assert (attn.num_heads, attn.head_dim) == (2, 48) and attn.scale == pytest.approx(48**-0.5)
        kept = _channels(attn.q.weight.detach(), old.q.weight.detach())
        positions = [c % head_dim for c in kept[:48]]
        assert kept == [h * head_dim + p for h in (0, 2) for p in positions]
        assert _channels(attn.k.weight.detach(), old.k.weight.detach()) == kept
        torch.testing.assert_close(attn.proj.weight, old.proj.weight[:, kept], rtol=0, atol=0)
        # The tables are the trained ones at the kept head-dim positions (windowed and global blocks).
        torch.testing.assert_close(attn.rel_pos_h, old.rel_pos_h[:, positions], rtol=0, atol=0)
        torch.testing.assert_close(attn.rel_pos_w, old.rel_pos_w[:, positions], rtol=0, atol=0)
    with torch.no_grad():
        assert encoder(example).shape == original(example).shape == (1, 128, 16, 16)


def test_heads_model_records_its_head_count_saves_loads_and_exports(tmp_path):
    """tiny (2 heads of 16) through both steps at 77 %: embed 6, one head of 6, fused back into
    segment_anything's Attention; SamConfig.encoder_num_heads says 1."""
    sam, encoder = _split_encoder("tiny")
    example = _example(sam)
    prune_embedding(encoder, 0.77, make_importance("random", "mean"), example)
    prune_bottleneck(encoder, 0.77, make_importance("random", "gaussian"), example, attention=HEADS)
    model = with_encoder(sam, encoder, config_for(encoder, sam.config, "tiny-heads"))
    config = model.config
    assert (config.encoder_embed_dim, config.encoder_num_heads, config.encoder_attn_dims) == (6, 1, None)
    assert all(isinstance(b.attn, Attention) and b.attn.num_heads == 1 for b in model.image_encoder.blocks)
    assert assert_saves_loads_and_exports(model, tmp_path, "tiny-heads").config == config


def test_recipe_names_parse_and_export_build_takes_them(capsys):
    for name in ("slimsam-50-heads", "slimsam-77-heads", "slimsam-77-heads+birkhoff"):
        assert name in COMPRESSIONS
        recipe = parse_recipe(name)
        assert recipe.name == name and recipe.stages[0].settings.attention == HEADS
    assert parse_recipe("slimsam-77").stages[0].settings.attention == "head-dims"
    stage = parse_recipe("slimsam-77-heads").with_images(synthetic_images(3), SlimSettings(epochs1=1)).stages[0]
    assert isinstance(stage, SlimSAM) and (stage.ratio, stage.settings.attention, stage.settings.epochs1) == (
        0.77, HEADS, 1)
    with pytest.raises(SystemExit):  # the name passes --compress's choices, then wants images
        build_main(["--compress", "slimsam-77-heads"])
    err = capsys.readouterr().err
    assert "needs --images" in err and "invalid choice" not in err


def test_global_pruning_with_whole_heads_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="global pruning"):
        SlimSettings(attention=HEADS, global_pruning=True)
    with pytest.raises(ValueError, match="global pruning"):
        parse_recipe("slimsam-50-heads", slimsam_settings=SlimSettings(global_pruning=True))
    sam, encoder = _split_encoder("tiny")
    with pytest.raises(ValueError, match="global pruning"):
        prune_bottleneck(encoder, 0.5, make_importance("random", "gaussian"), _example(sam), global_pruning=True,
                         attention=HEADS)
    out = tmp_path / "o.safetensors"
    assert slimsam_main(["--synthetic", "12", "--heads", "--global-pruning", "--out", str(out)]) == 2
    assert "global pruning" in capsys.readouterr().err and not (tmp_path / "o.safetensors.work").exists()
    with pytest.raises(ValueError, match="unknown step-2 attention"):
        SlimSettings(attention="head")


def test_sam2_hiera_refuses_whole_heads(tmp_path):
    model = get_family("sam2").build(MODEL_TYPES["sam2.1_hiera_t_256"], seed=0)
    images = [torch.zeros(1, 3, 256, 256)] * 3
    with pytest.raises(ValueError, match="SAM 1's ViT"):  # before step 1 prunes or trains anything
        slim(model, images[:2], images[2:], SlimSettings(attention=HEADS, show_progress=False), tmp_path / "w")
    assert not (tmp_path / "w" / "pruned1.safetensors").exists()
    with pytest.raises(ValueError, match="SAM 1's ViT"):
        target_for(model).prune_bottleneck(None, 0.5, None, None, attention=HEADS)


def test_cli_heads_prunes_whole_heads(tmp_path, tiny_checkpoint):
    out = tmp_path / "slim.safetensors"
    args = ["--checkpoint", str(tiny_checkpoint), "--synthetic", "8", "--val-count", "2", "--ratio", "0.77",
            "--heads", "--epochs1", "1", "--epochs2", "1", "--feature-epochs", "1", "--alpha-epochs", "1",
            "--importance-images", "2", "--batch-size", "3", "--accumulate", "1", "--out", str(out)]
    assert slimsam_main(args) == 0
    config = load_checkpoint(out).config
    assert (config.encoder_num_heads, config.attn_dim(0)) == (1, 6)
    assert json.loads((tmp_path / "slim.safetensors.work" / "run.json").read_text())["heads"] == "True"


def test_heads_demo_bundle_passes_parity(tmp_path):
    settings = SlimSettings(importance_images=4, epochs1=1, epochs2=1, feature_epochs=1, alpha_epochs=1,
                            batch_size=4, accumulate=1, show_progress=False)
    recipe = parse_recipe("slimsam-50-heads", images=synthetic_images(12), slimsam_settings=settings)
    out = tmp_path / "demo-slimsam-50-heads-cpu"
    report = build_bundle(out, "cpu", DEMO_CHECKPOINT, recipe=recipe)
    assert report["passed"] and report["worst"]["mask_iou"] >= 0.99
    model = load_checkpoint(out / SlimSAM.checkpoint_name)
    # Demo: 3 heads of 64, embed 192 -> embed 96 and 2 heads of 48, fused back (q/k/v as wide as the embed).
    assert (model.config.encoder_embed_dim, model.config.encoder_num_heads, model.config.attn_dim(0)) == (96, 2, 96)
    assert not any(isinstance(b.attn, SplitAttention) for b in model.image_encoder.blocks)
    assert all(b.attn.rel_pos_h.shape[1] == 48 for b in model.image_encoder.blocks)
