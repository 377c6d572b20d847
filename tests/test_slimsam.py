"""SlimSAM on torch-pruning: split/fuse, both pruning steps, distillation, checkpoints, export, CLI."""

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from compress import CheckpointError, build_sam, load_checkpoint, save_checkpoint
from compress.birkhoff.hyper_linear import HyperLinear
from compress.recipe import Birkhoff, SlimSAM, parse_recipe
from compress.slimsam.__main__ import main as slimsam_main
from compress.slimsam.attention import SplitAttention, fuse_attention, split_attention
from compress.slimsam.images import synthetic_images
from compress.slimsam.importance import accumulate_gradients, make_importance
from compress.slimsam.pipeline import config_for, slim, with_encoder
from compress.slimsam.prune import encoder_widths, prune_bottleneck, prune_embedding
from compress.slimsam.settings import SlimSettings
from export.build import build_bundle
from tests.conftest import DEMO_CHECKPOINT
from tests.slimsam_checks import assert_saves_loads_and_exports


def test_split_and_fuse_keep_the_computation():
    encoder = build_sam("tiny", seed=0).image_encoder
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = encoder(image)
        split_attention(encoder)
        assert all(isinstance(b.attn, SplitAttention) for b in encoder.blocks)
        torch.testing.assert_close(encoder(image), expected, rtol=0, atol=0)
        fuse_attention(encoder)
        assert not any(isinstance(b.attn, SplitAttention) for b in encoder.blocks)
        torch.testing.assert_close(encoder(image), expected, rtol=1e-6, atol=1e-6)


def test_pruning_steps_give_the_widths_and_keep_relative_positions():
    encoder = build_sam("demo", seed=0).image_encoder
    split_attention(encoder)
    original = copy.deepcopy(encoder)
    example = torch.randn(1, 3, 256, 256)
    prune_embedding(encoder, 0.5, make_importance("random", "mean"), example)
    assert encoder_widths(encoder).embed == 96 and encoder_widths(encoder).qkv == [192] * 4
    prune_bottleneck(encoder, 0.5, make_importance("random", "gaussian"), example)
    widths = encoder_widths(encoder)
    assert widths.embed == 96 and widths.qkv == [96] * 4 and widths.mlp == [384] * 4
    for block, before in zip(encoder.blocks, original.blocks):
        attn = block.attn
        assert attn.head_dim == 32 and attn.scale == pytest.approx(32**-0.5)
        assert attn.rel_pos_h.shape[1] == 32
        # The kept tables are columns of the trained ones, not zeros.
        old = before.attn.rel_pos_h.detach()
        for column in attn.rel_pos_h.detach().T:
            assert (old.T == column).all(dim=1).any()
    with torch.no_grad():
        assert encoder(example).shape == (1, 128, 16, 16)


def test_whole_pipeline_on_tiny_model_reloads_and_exports(tmp_path):
    sam = build_sam("tiny", seed=0)
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.standard_normal((1, 3, 64, 64)).astype(np.float32)) for _ in range(8)]
    settings = SlimSettings(ratio=0.5, importance_images=4, epochs1=3, epochs2=3, feature_epochs=2,
                            alpha_epochs=2, lr=2e-3, batch_size=2, accumulate=1, show_progress=False)
    stages = []
    model = slim(sam, images[:6], images[6:], settings, tmp_path / "work",
                 stage_end=lambda name, m: stages.append(name) or {})
    assert stages == ["pruned-1", "distilled-1", "pruned-2", "distilled-2"]
    config = model.config
    assert config.encoder_embed_dim == 16 and config.encoder_mlp_dims == (64, 64)
    assert config.attn_dim(0) == 16 and not any(isinstance(b.attn, SplitAttention) for b in model.image_encoder.blocks)
    # Distillation learns: the term present in every epoch falls (the totals change definition).
    step1, step2 = settings.log["step1_log"], settings.log["step2_log"]
    assert step1[-1]["embedding"] < step1[0]["embedding"]
    assert step2[-1]["to_sam"] < step2[0]["to_sam"]
    assert_saves_loads_and_exports(model, tmp_path, "tiny-slim")


def test_per_block_widths_round_trip_through_our_format(tmp_path):
    config = build_sam("tiny").config.replace(name="tiny-pruned", encoder_attn_dims=(16, 32),
                                              encoder_mlp_dims=(48, 64))
    model = build_sam(config, seed=1)
    assert isinstance(model.image_encoder.blocks[0].attn, SplitAttention)
    save_checkpoint(model, tmp_path / "m.safetensors")
    again = load_checkpoint(tmp_path / "m.safetensors")
    assert again.config == config
    assert again.image_encoder.blocks[0].mlp.lin1.out_features == 48


def test_published_uniform_state_dicts_load_with_their_widths(tmp_path):
    config = build_sam("vit_b").config.replace(name="x", encoder_embed_dim=168, encoder_mlp_dims=(696,) * 12)
    torch.save(build_sam(config, seed=2).state_dict(), tmp_path / "SlimSAM-77-uniform.pth")
    model = load_checkpoint(tmp_path / "SlimSAM-77-uniform.pth")
    assert model.config.encoder_embed_dim == 168 and model.config.encoder_num_heads == 12
    assert model.config.encoder_mlp_dims == (696,) * 12 and model.config.encoder_global_attn_indexes == (2, 5, 8, 11)
    with pytest.raises(CheckpointError, match="matches none"):
        load_checkpoint(tmp_path / "SlimSAM-77-uniform.pth", model_type="vit_b")


def test_cli_refuses_an_empty_folder_and_an_unfinished_work_dir(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert slimsam_main(["--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o.safetensors")]) == 2
    assert "no images" in capsys.readouterr().err
    (tmp_path / "o.safetensors.work").mkdir()
    assert slimsam_main(["--synthetic", "12", "--out", str(tmp_path / "o.safetensors")]) == 2
    assert "--resume" in capsys.readouterr().err


def test_slimsam_cli_runs_step_1_alone_and_resumes_only_the_same_run(tmp_path, capsys):
    out = tmp_path / "step1.safetensors"
    args = ["--synthetic", "10", "--val-count", "2", "--step", "1", "--epochs1", "1", "--feature-epochs", "1",
            "--importance-images", "2", "--batch-size", "4", "--accumulate", "1", "--out", str(out)]
    assert slimsam_main(args) == 0
    model = load_checkpoint(out)
    assert model.config.encoder_embed_dim == 96 and model.config.attn_dim(0) == 192
    capsys.readouterr()
    assert slimsam_main(args + ["--resume", "--ratio", "0.77"]) == 2
    assert "ratio: 0.5 -> 0.77" in capsys.readouterr().err


def _one_epoch_recipe(name: str):
    """`--compress name` on 12 synthetic images, one epoch per step: the pipeline, not the quality."""
    settings = SlimSettings(importance_images=4, epochs1=1, epochs2=1, feature_epochs=1, alpha_epochs=1,
                            batch_size=4, accumulate=1, show_progress=False)
    return parse_recipe(name, images=synthetic_images(12), slimsam_settings=settings)


def test_pruned_demo_bundle_passes_parity(tmp_path):
    PRUNED_CHECKPOINT = SlimSAM.checkpoint_name
    out = tmp_path / "demo-slimsam-50-cpu"
    report = build_bundle(out, "cpu", DEMO_CHECKPOINT, recipe=_one_epoch_recipe("slimsam-50"))
    assert report["passed"] and report["worst"]["mask_iou"] >= 0.99
    assert (out / PRUNED_CHECKPOINT).is_file()
    assert load_checkpoint(out / PRUNED_CHECKPOINT).config.encoder_embed_dim == 96


def test_torchrun_distributed_data_parallel_on_two_cpu_processes(tmp_path, tiny_checkpoint):
    """The multi-GPU path, run on CPU with the gloo backend: torchrun starts two ranks."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "slim.safetensors"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "compress.slimsam", "--checkpoint", str(tiny_checkpoint), "--images", str(folder),
               "--val-count", "2", "--epochs1", "1", "--epochs2", "1", "--feature-epochs", "1",
               "--alpha-epochs", "1", "--importance-images", "2", "--batch-size", "2", "--accumulate", "1",
               "--out", str(out)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_checkpoint(out).config.encoder_embed_dim == 16


def test_global_pruning_gives_per_block_widths_that_save_and_reload(tmp_path):
    sam = build_sam("demo", seed=0)
    encoder = copy.deepcopy(sam.image_encoder)
    split_attention(encoder)
    teacher = copy.deepcopy(encoder)
    example = torch.randn(1, 3, 256, 256)
    accumulate_gradients(encoder, teacher, [example], disturb=True, show_progress=False)
    prune_bottleneck(encoder, 0.5, make_importance("disturbed-taylor", "gaussian"), example, global_pruning=True)
    widths = encoder_widths(encoder)
    assert len(set(widths.qkv)) > 1 and sum(widths.qkv) == pytest.approx(4 * 96, abs=12)
    assert all(w % 3 == 0 for w in widths.qkv)  # whole head dims in each of the 3 heads
    model = with_encoder(sam, encoder, config_for(encoder, sam.config, "demo-global"))
    save_checkpoint(model, tmp_path / "g.safetensors")
    again = load_checkpoint(tmp_path / "g.safetensors")
    assert list(again.config.encoder_attn_dims) == widths.qkv
    with torch.no_grad():
        torch.testing.assert_close(again.image_encoder(example), model.image_encoder(example), rtol=0, atol=0)


def test_stacked_slimsam_then_birkhoff_bundle(tmp_path, tiny_checkpoint):
    """slimsam-77+birkhoff: the pruned model is hyper-compressed; only that checkpoint ships."""
    COMPRESSED_CHECKPOINT, PRUNED_CHECKPOINT = Birkhoff.checkpoint_name, SlimSAM.checkpoint_name
    out = tmp_path / "tiny-stacked-cpu"
    report = build_bundle(out, "cpu", tiny_checkpoint, recipe=_one_epoch_recipe("slimsam-77+birkhoff"))
    assert report["passed"] and report["worst"]["mask_iou"] >= 0.99
    assert not (out / PRUNED_CHECKPOINT).exists()
    model = load_checkpoint(out / COMPRESSED_CHECKPOINT)
    original = load_checkpoint(tiny_checkpoint)
    assert model.config.encoder_embed_dim < original.config.encoder_embed_dim
    assert any(isinstance(m, HyperLinear) for m in model.image_encoder.modules())
    entry = json.loads((out / "manifest.json").read_text())["compression"]
    assert [s["method"] for s in entry["stages"]] == ["slimsam", "birkhoff"]
    assert entry["compressed_bytes"] == (out / COMPRESSED_CHECKPOINT).stat().st_size
    # Hyper-compression shrinks the pruned checkpoint (tiny model: its decoder dominates the bytes).
    assert entry["compressed_bytes"] < 0.6 * entry["stages"][0]["compressed_bytes"]
    assert entry["ratio"] > 2.5
