import json

import pytest
import torch
from safetensors.torch import save_file

from compress import CheckpointError, SamConfig, build_sam, get_config, load_checkpoint, save_checkpoint
from compress.checkpoint import detect_official_type
from compress.checkpoint_file import read_checkpoint_metadata, sniff_format


def test_round_trip_keeps_every_tensor_and_the_architecture(tmp_path):
    model = build_sam("tiny", seed=3)
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path)
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    original, reloaded = model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, reloaded[name]), name
    meta = read_checkpoint_metadata(path)
    assert meta["format"] == "samedge.checkpoint"
    assert json.loads(meta["architecture"])["encoder_embed_dim"] == 32


def test_config_round_trips_through_json():
    for name in ("vit_b", "vit_l", "vit_h", "demo", "tiny"):
        config = get_config(name)
        assert SamConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.slow
def test_official_architectures_have_published_sizes():
    # Whole-model parameter counts of the official SAM checkpoints (93.7M and 312.3M).
    expected = {"vit_b": 93.7e6, "vit_l": 312.3e6}
    for name, count in expected.items():
        model = build_sam(name)
        params = sum(p.numel() for p in model.parameters())
        assert abs(params - count) / count < 0.002, (name, params)


@pytest.fixture(scope="module")
def official_vit_b(tmp_path_factory):
    """An official-style checkpoint: a plain state dict saved with torch.save."""
    path = tmp_path_factory.mktemp("official") / "sam_vit_b_seed.pth"
    torch.save(build_sam("vit_b", seed=1).state_dict(), path)
    return path


@pytest.mark.slow
def test_official_checkpoint_loads_with_its_detected_type(official_vit_b):
    model = load_checkpoint(official_vit_b, "vit_b")
    assert model.config.name == "vit_b"
    reference = torch.load(official_vit_b, weights_only=True)
    assert torch.equal(model.state_dict()["image_encoder.blocks.3.attn.qkv.weight"],
                       reference["image_encoder.blocks.3.attn.qkv.weight"])


@pytest.mark.slow
def test_wrong_model_type_names_the_right_one(official_vit_b):
    with pytest.raises(CheckpointError, match="holds a vit_b model.*--model-type vit_b"):
        load_checkpoint(official_vit_b, "vit_l")


def test_state_dict_of_unknown_size_is_refused():
    state = build_sam("tiny").state_dict()
    with pytest.raises(CheckpointError, match="matches none of"):
        detect_official_type(state)
    with pytest.raises(CheckpointError, match="not a SAM state dict"):
        detect_official_type({"weight": torch.zeros(1)})


class Payload:  # a pickled object: loading it would run code
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_never_run(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_truncated_samedge_file_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(build_sam("tiny"), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_random_bytes_and_missing_files(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(CheckpointError, match="neither a samedge checkpoint"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")


def test_plain_safetensors_without_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="without samedge metadata"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    model = build_sam("tiny")
    path = tmp_path / "m.safetensors"
    save_checkpoint(model, path, config=get_config("tiny").replace(encoder_depth=3))
    with pytest.raises(CheckpointError, match="do not fit the tiny architecture"):
        load_checkpoint(path)


def test_newer_architecture_fields_ask_for_an_upgrade(tmp_path):
    architecture = get_config("tiny").to_dict() | {"future_field": 1}
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(1)}, path, metadata={
        "format": "samedge.checkpoint", "format_version": "1", "architecture": json.dumps(architecture)})
    with pytest.raises(CheckpointError, match="upgrade samedge"):
        load_checkpoint(path)


def test_legacy_torch_save_format_is_read_safely(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"model": Payload()}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(path)


def test_state_dict_with_non_tensors_is_refused(tmp_path):
    path = tmp_path / "mixed.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1), "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="state dict of tensors"):
        load_checkpoint(path)


def test_safetensors_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """A header of 0x..80 bytes puts 0x80 first in the file, the pickle protocol's opcode."""
    path = tmp_path / "w.safetensors"
    for padding in range(300):  # grow the metadata until the header length's low byte is 0x80
        save_file({"w": torch.zeros(2)}, str(path), metadata={"note": "x" * padding})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    assert sniff_format(path) == "safetensors"
