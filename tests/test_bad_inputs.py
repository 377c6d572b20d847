"""Every hostile input issue 10 found, in one table: each is refused with an error that names
the cause and the fix, or accepted and answered correctly. Nothing else counts as a pass.

Items refer to issue 10's list; items "24.n" to issue 24's (answers that were wrong in silence). Cases run in-process where the library raises, and
through the command line where the command is what users meet (exit status 2, a message,
no traceback).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from compress import build_sam, load_checkpoint, save_checkpoint
from compress.birkhoff.model import compress_model
from compress.birkhoff.storage import save_compressed
from compress.slimsam.pipeline import slim
from compress.slimsam.settings import SlimSettings
from export.build import build_bundle
from runtime import Session
from runtime.bundle import seal_manifest
from runtime.bundle_writer import prepare_target

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "compress" / "weights" / "demo_sam.safetensors"
IMAGE = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)


@dataclass
class Context:
    tmp: Path
    checkpoint: Path  # tiny, seeded
    bundle: Path  # tiny bundle, shared: copy it before changing it

    def copy_bundle(self) -> Path:
        target = self.tmp / "copy"
        shutil.copytree(self.bundle, target)
        return target

    def edit_manifest(self, edit, reseal: bool = True) -> Path:
        """A copy whose manifest `edit` changed; `reseal`: sealed again, as a faulty writer would leave
        it (the checks of its fields), else as a hand edit leaves it (refused by the seal)."""
        bundle = self.copy_bundle()
        path = bundle / "manifest.json"
        manifest = json.loads(path.read_text())
        edit(manifest)
        path.write_text(json.dumps(seal_manifest(manifest) if reseal else manifest))
        return bundle


def cli(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, text=True)


def refused_by_cli(result: subprocess.CompletedProcess) -> str:
    """A command's refusal: exit status 2 and a one-paragraph message, never a traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    raise ValueError(result.stderr.strip().splitlines()[-1])


def predict(bundle, verify=True):
    return Session(bundle, verify=verify).predict(IMAGE, points=[[30, 20]], labels=[1])


def demo_state_dict(ctx: Context, convert=lambda t: t) -> Path:
    path = ctx.tmp / "demo.pth"
    torch.save({k: convert(v) for k, v in load_file(str(DEMO)).items()}, path)
    return path


def tiny_state_dict(ctx: Context, convert) -> Path:
    path = ctx.tmp / "tiny.pth"
    torch.save({k: convert(k, v) for k, v in load_file(str(ctx.checkpoint)).items()}, path)
    return path


def replace_file(ctx: Context, name: str, source: Path, verify: bool):
    bundle = ctx.copy_bundle()
    shutil.copy(source, bundle / name)
    return predict(bundle, verify)


def other_model_bundle(ctx: Context, model_type: str, seed: int) -> Path:
    checkpoint = ctx.tmp / f"{model_type}{seed}.safetensors"
    save_checkpoint(build_sam(model_type, seed=seed), checkpoint)
    out = ctx.tmp / f"{model_type}{seed}-bundle"
    build_bundle(out, "cpu", checkpoint, run_parity=False)
    return out


def same_answers_as_the_fp32_model(tolerance):
    def check(ctx, model):
        reference = load_checkpoint(ctx.checkpoint)
        pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            got, want = model.image_encoder(pixels), reference.image_encoder(pixels)
        assert float((got - want).abs().max()) <= tolerance
    return check


def same_model_as_the_demo(ctx, model):
    demo = load_checkpoint(DEMO)
    assert model.config == demo.config  # four decoder heads, as trained
    for name, tensor in demo.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name]), name


def build_over(ctx: Context, prepare, *extra) -> subprocess.CompletedProcess:
    out = prepare(ctx)
    return cli("export.build", "--checkpoint", ctx.checkpoint, "--out", out, "--skip-parity", *extra)


def user_folder(ctx: Context) -> Path:
    folder = ctx.tmp / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    return folder


def bundle_with_a_user_file(ctx: Context) -> Path:
    bundle = ctx.copy_bundle()
    (bundle / "photo.jpg").write_bytes(b"mine")
    return bundle


def under_a_file(ctx: Context) -> Path:
    (ctx.tmp / "afile").write_text("x")
    return ctx.tmp / "afile" / "sub"


def overwrite_holding_the_checkpoint(ctx: Context):
    folder = ctx.tmp / "D"
    folder.mkdir()
    checkpoint = folder / "my_model.safetensors"
    shutil.copy(ctx.checkpoint, checkpoint)
    (folder / "other.txt").write_text("keep me")
    try:
        return refused_by_cli(cli("export.build", "--checkpoint", checkpoint, "--out", folder, "--overwrite"))
    finally:
        assert sorted(p.name for p in folder.iterdir()) == ["my_model.safetensors", "other.txt"]


def build_in_current_directory(ctx: Context):
    bundle = ctx.copy_bundle()
    result = subprocess.run([sys.executable, "-m", "export.build", "--checkpoint", str(ctx.checkpoint),
                             "--out", ".", "--overwrite", "--skip-parity"], cwd=bundle, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return refused_by_cli(result)


def without_write_access(ctx: Context, target: str, overwrite: bool):
    """prepare_target for `place/<target>` as a user who may not change `place` (a read-only folder
    holding a copy of the tiny bundle, `b`): nobody when we are root (root may write anywhere),
    else ourselves after chmod -w. Runs in a forked child; its verdict comes back as the error."""
    place = Path(tempfile.mkdtemp(dir="/tmp"))  # not below pytest's private tmp: nobody must reach it
    try:
        shutil.copytree(ctx.bundle, place / "b")
        for path in [place, *place.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through the pipe
            os.close(read)
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                prepare_target(place / target, overwrite=overwrite)
                verdict = "accepted"
            except Exception as err:
                verdict = f"{type(err).__name__}: {err}"
            os.write(write, verdict.encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            verdict = pipe.read()
        os.waitpid(child, 0)
        assert (place / "b" / "manifest.json").is_file() and sorted(p.name for p in place.iterdir()) == ["b"]
        raise ValueError(verdict)
    finally:
        for path in [place, *place.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(place)


def quantize_truncated(ctx: Context):
    bundle = ctx.copy_bundle()
    text = (bundle / "manifest.json").read_text()
    (bundle / "manifest.json").write_text(text[: len(text) // 2])
    return refused_by_cli(cli("export.quantize", bundle, "--method", "int8", "--out", ctx.tmp / "q"))


def predict_cli(ctx: Context, out: Path, *extra):
    image = ctx.tmp / "in.png"
    Image.fromarray(IMAGE).save(image)
    return cli("runtime.predict", ctx.bundle, image, "--point", "30,20", "--out", out, *extra)


def jpeg_written(ctx: Context, result):
    assert result.returncode == 0, result.stderr
    assert (ctx.tmp / "ov.jpg").read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, not PNG bytes under a .jpg name


def birkhoff_into_a_directory(ctx: Context):
    (ctx.tmp / "out.safetensors").mkdir()
    return refused_by_cli(cli("compress.birkhoff", ctx.checkpoint, "--out", ctx.tmp / "out.safetensors"))


def parity_with_another_model(ctx: Context):
    return refused_by_cli(cli("runtime.parity", ctx.bundle, "--checkpoint", DEMO, "--out", ctx.tmp / "p.json"))


def predict_image(ctx: Context, image):
    return Session(ctx.bundle).predict(image, points=[[30, 20]], labels=[1])


def lone_pair_of_two_models(ctx: Context):
    """encoder.onnx of one model beside decoder.onnx of another, no manifest."""
    folder = ctx.tmp / "lone"
    folder.mkdir()
    shutil.copy(ctx.bundle / "encoder.onnx", folder)
    shutil.copy(other_model_bundle(ctx, "tiny", 1) / "decoder.onnx", folder)
    return predict(folder / "encoder.onnx", verify=False)


def _float_image():
    return Image.fromarray(np.random.default_rng(1).random((48, 64), dtype=np.float32), mode="F")


def _many_points() -> np.ndarray:
    points = np.full((200_000, 2), 10.0)
    points[123456, 1] = np.nan
    return points


def _compressed(ctx: Context) -> Path:
    path = ctx.tmp / "tiny.birkhoff.safetensors"
    save_compressed(compress_model(load_checkpoint(ctx.checkpoint), show_progress=False), path)
    return path


def _slim_a_compressed_model(ctx: Context):
    model = load_checkpoint(_compressed(ctx))
    images = [torch.zeros(1, 3, 64, 64)] * 3
    return slim(model, images[:2], images[2:], SlimSettings(), ctx.tmp / "work")


def _file(ctx: Context, name: str, data: bytes) -> Path:
    (ctx.tmp / name).write_bytes(data)
    return ctx.tmp / name


def _manifest_text(ctx: Context, text: str) -> Path:
    bundle = ctx.copy_bundle()
    (bundle / "manifest.json").write_text(text)
    return bundle


def _manifest_bytes(ctx: Context, data: bytes) -> Path:
    bundle = ctx.copy_bundle()
    (bundle / "manifest.json").write_bytes(data)
    return bundle


def _flip_a_byte(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # inside the last initializer: the file still loads, with other weights
    path.write_bytes(bytes(data))
    return path.parent


def _one_nan(name: str, tensor: torch.Tensor) -> torch.Tensor:
    if name == "mask_decoder.iou_token.weight":
        tensor = tensor.clone()
        tensor.view(-1)[3] = float("nan")
    return tensor


# (item, name, action, regex of the refusal, or None and a check of the accepted answer)
CASES: list[tuple[str, str, Callable, str | None, Callable | None]] = [
    # 1: --overwrite only replaces samedge bundles, never the input
    ("1", "overwrite a folder holding the checkpoint", overwrite_holding_the_checkpoint,
     r"holds the input .*my_model.safetensors.*choose another --out", None),
    ("1", "overwrite a folder that is not a bundle",
     lambda ctx: refused_by_cli(build_over(ctx, user_folder, "--overwrite")),
     r"not a samedge bundle .*notes.txt.*choose another --out", None),
    ("1", "overwrite a bundle holding a user's file",
     lambda ctx: refused_by_cli(build_over(ctx, bundle_with_a_user_file, "--overwrite")),
     r"files samedge did not write \(photo.jpg\).*move them out", None),
    # 2: architecture inference never guesses
    ("2", "demo state dict as .pth, no architecture", lambda ctx: load_checkpoint(demo_state_dict(ctx)),
     r"decoder is not SAM's.*head count.*--model-type", None),
    ("2", "demo state dict as .pth with --model-type demo",
     lambda ctx: load_checkpoint(demo_state_dict(ctx), "demo"), None, same_model_as_the_demo),
    # 3: integer weights refused; fp16/bf16 upcast
    ("3", "int32 weights", lambda ctx: load_checkpoint(tiny_state_dict(ctx, lambda k, v: v.to(torch.int32)), "tiny"),
     r"is torch.int32; SAM weights are floating point", None),
    ("3", "fp16 weights", lambda ctx: load_checkpoint(tiny_state_dict(ctx, lambda k, v: v.half()), "tiny"), None,
     same_answers_as_the_fp32_model(0.05)),
    ("3", "bf16 weights", lambda ctx: load_checkpoint(tiny_state_dict(ctx, lambda k, v: v.bfloat16()), "tiny"), None,
     same_answers_as_the_fp32_model(0.3)),
    # 4: images and prompts (tests/test_images.py and test_prompts.py go through every PIL mode and more)
    ("4", "PIL image of mode F (floats 0..1)",
     lambda ctx: Session(ctx.bundle).predict(_float_image(), points=[[30, 20]], labels=[1]),
     r"float32 pixels are not supported; pass uint8 RGB .*\* 255", None),
    ("12", "a directory as image", lambda ctx: Session(ctx.bundle).predict(ctx.tmp, points=[[3, 3]], labels=[1]),
     r"is a directory, not an image file", None),
    ("12", "200k points, one NaN", lambda ctx: Session(ctx.bundle).predict(IMAGE, points=_many_points(),
                                                                          labels=np.ones(200_000)),
     r"points contains NaN .*1 of 400000; the first is points\[123456, 1\] = nan", None),
    ("12", "a 1 x 5000 image", lambda ctx: Session(ctx.bundle).predict(np.zeros((1, 5000, 3), np.uint8),
                                                                      points=[[3, 0]], labels=[1]),
     r"too elongated .* pad its short side to at least", None),
    # 5, 10: manifests are checked when a bundle is opened
    ("5", "pixel_std 0",
     lambda ctx: predict(ctx.edit_manifest(lambda m: m["preprocessing"].update(pixel_std=[0, 0, 0]))),
     r"pixel_std is \[0, 0, 0\], not three positive numbers", None),
    ("5", "pixel_mean not numbers",
     lambda ctx: predict(ctx.edit_manifest(lambda m: m["preprocessing"].update(pixel_mean=["a", 1, 2]))),
     r"pixel_mean .* not three finite numbers", None),
    ("10", "manifest a JSON list", lambda ctx: predict(_manifest_text(ctx, "[1, 2]")),
     r"not a samedge bundle manifest", None),
    ("10", "manifest without preprocessing", lambda ctx: predict(ctx.edit_manifest(lambda m: m.pop("preprocessing"))),
     r"lacks its 'preprocessing' section", None),
    ("10", "manifest of random bytes", lambda ctx: predict(_manifest_bytes(ctx, os.urandom(200))),
     r"manifest.json is not valid JSON.*rebuild the bundle", None),
    ("10", "img_size changed to 1024",
     lambda ctx: predict(ctx.edit_manifest(lambda m: m["preprocessing"].update(img_size=1024))),
     r"takes 64 px images but the manifest says img_size 1024", None),
    ("10", "manifest file list leaving the bundle",
     lambda ctx: predict(ctx.edit_manifest(lambda m: m["files"].update({"../x": {"bytes": 1, "sha256": "0"}}))),
     r"lists '../x', outside the bundle", None),
    # 6, 7, 10: files that do not belong together
    ("6", "edited decoder.onnx", lambda ctx: predict(_flip_a_byte(ctx.copy_bundle() / "decoder.onnx")),
     r"decoder.onnx does not match the manifest", None),
    ("6", "decoder of another model, same architecture",
     lambda ctx: replace_file(ctx, "decoder.onnx", other_model_bundle(ctx, "tiny", 1) / "decoder.onnx", True),
     r"decoder.onnx was exported from another model .*copied from another bundle", None),
    ("7", "decoder_single.onnx over decoder.onnx",
     lambda ctx: replace_file(ctx, "decoder.onnx", ctx.bundle / "decoder_single.onnx", True),
     r"decoder.onnx does not match the manifest", None),
    ("7", "decoder_single.onnx over decoder.onnx, hashes not checked",
     lambda ctx: replace_file(ctx, "decoder.onnx", ctx.bundle / "decoder_single.onnx", False),
     r"gives 1 mask\(s\) per prompt, not 4 .*decoder_single.onnx copied over", None),
    ("10", "decoder of another embedding width, hashes not checked",
     lambda ctx: replace_file(ctx, "decoder.onnx", other_model_bundle(ctx, "demo", 0) / "decoder.onnx", False),
     r"decoder.onnx was exported from another model", None),
    ("10", "encoder.onnx over decoder.onnx, hashes not checked",
     lambda ctx: replace_file(ctx, "decoder.onnx", ctx.bundle / "encoder.onnx", False),
     r"not the SAM decoder's", None),
    # 8: the overlay's format follows its name
    ("8", "predict --out ov.jpg", lambda ctx: predict_cli(ctx, ctx.tmp / "ov.jpg"), None, jpeg_written),
    ("8", "predict --out ov.txt", lambda ctx: refused_by_cli(predict_cli(ctx, ctx.tmp / "ov.txt")),
     r"\.txt is not an image format.*\.png or \.jpg", None),
    # 11: outputs checked before the work starts
    ("11", "build --out under /proc",
     lambda ctx: refused_by_cli(build_over(ctx, lambda c: Path("/proc/samedge/b"))), r"cannot write in /proc", None),
    ("11", "build --out below a regular file", lambda ctx: refused_by_cli(build_over(ctx, under_a_file)),
     r"afile is a file, so nothing can be created below it", None),
    ("11", "build --out . --overwrite", build_in_current_directory, r"is the current directory", None),
    ("11", "build --out in a read-only folder", lambda ctx: without_write_access(ctx, "new", overwrite=False),
     r"OutputError: --out .*new: cannot write in .* \(Permission denied\); choose a writable location", None),
    ("11", "build --overwrite a read-only bundle", lambda ctx: without_write_access(ctx, "b", overwrite=True),
     r"OutputError: .*is read-only, so the old bundle cannot be removed; make it writable \(chmod -R u\+w", None),
    ("11", "predict --out an existing directory", lambda ctx: refused_by_cli(predict_cli(ctx, ctx.tmp)),
     r"is a directory; name the file", None),
    ("11", "predict --out below a regular file", lambda ctx: refused_by_cli(predict_cli(ctx, under_a_file(ctx))),
     r"afile is a file", None),
    ("11", "birkhoff --out an existing directory", birkhoff_into_a_directory, r"is a directory", None),
    ("11", "quantize a bundle with a truncated manifest", quantize_truncated, r"not valid JSON.*rebuild", None),
    # 12: errors that were unclear
    ("12", "random bytes starting with 0x80",
     lambda ctx: load_checkpoint(_file(ctx, "r.pth", b"\x80" + os.urandom(500))),
     r"^(?!.*weights_only=False).*corrupt, or holds Python objects", None),
    ("12", "a directory as checkpoint", lambda ctx: load_checkpoint(ctx.tmp),
     r"is a directory; pass the checkpoint file", None),
    ("12", "NaN weights", lambda ctx: load_checkpoint(tiny_state_dict(ctx, _one_nan), "tiny"),
     r"tensor mask_decoder.iou_token.weight holds 1 NaN or infinite values", None),
    ("12", "parity of a bundle with another model's checkpoint", parity_with_another_model,
     r"another architecture than .* was built from \(img_size: bundle 64, checkpoint 256", None),
    # issue 24: the last silent wrong answers
    ("24.1", "pixel_mean and pixel_std edited to 0 and 1", lambda ctx: predict(ctx.edit_manifest(
        lambda m: m["preprocessing"].update(pixel_mean=[0, 0, 0], pixel_std=[1, 1, 1]), reseal=False)),
     r"manifest.json was edited after the bundle was built \(changed: preprocessing.pixel_mean, "
     r"preprocessing.pixel_std\).*Restore the manifest", None),
    ("24.1", "pixel statistics edited, hashes not checked", lambda ctx: predict(ctx.edit_manifest(
        lambda m: m["preprocessing"].update(pixel_std=[1, 1, 1]), reseal=False), verify=False),
     r"edited after the bundle was built \(changed: preprocessing.pixel_std\)", None),
    ("24.1", "a field added to the manifest", lambda ctx: predict(ctx.edit_manifest(
        lambda m: m.update(note="mine"), reseal=False)), r"edited after the bundle was built \(added: note\)", None),
    ("24.1", "manifest without its seal", lambda ctx: predict(ctx.edit_manifest(lambda m: m.pop("integrity"),
                                                                                 reseal=False)),
     r"has no 'integrity' seal .*rebuild the bundle", None),
    ("24.2", "decoder of another model, same architecture, hashes not checked",
     lambda ctx: replace_file(ctx, "decoder.onnx", other_model_bundle(ctx, "tiny", 1) / "decoder.onnx", False),
     r"decoder.onnx was exported from another model \(digest .*\): it was copied from another bundle", None),
    ("24.2", "decoder_batch.onnx of another model, hashes not checked",
     lambda ctx: replace_file(ctx, "decoder_batch.onnx", other_model_bundle(ctx, "tiny", 1) / "decoder_batch.onnx",
                              False), r"decoder_batch.onnx was exported from another model", None),
    ("24.2", "lone encoder.onnx with another model's decoder.onnx", lone_pair_of_two_models,
     r"encoder.onnx, decoder.onnx.* were exported from different models", None),
    ("24.3", "predict_batch labels transposed [P, N]",
     lambda ctx: Session(ctx.bundle).predict_batch(IMAGE, points=np.full((3, 2, 2), 10.0), labels=np.ones((2, 3))),
     r"points has shape \(3, 2, 2\) but labels \(2, 3\); give labels of shape \[3, 2\].*transposed", None),
    ("24.3", "predict_batch labels flat",
     lambda ctx: Session(ctx.bundle).predict_batch(IMAGE, points=np.full((3, 2, 2), 10.0), labels=np.ones(6)),
     r"labels \(6,\); give labels of shape \[3, 2\]", None),
    ("24.4", "uint16 image holding 0..255 values",
     lambda ctx: predict_image(ctx, IMAGE.astype(np.uint16)), r"uint16 image whose values are all at most 2\d\d: "
     r"8-bit pixels in a 16-bit array.*astype\(np.uint8\)", None),
    ("24.4", "int64 image of 0/1 values", lambda ctx: predict_image(ctx, (IMAGE > 127).astype(np.int64)),
     r"int64 image holding only 0 and 1: a mask.*astype\(bool\)", None),
    ("24.8", "points in (row, col) order",
     lambda ctx: Session(ctx.bundle).predict(IMAGE, points=[[30, 60]], labels=[1]),
     r"outside the 64x48 image.*\(row, col\) order\? swap them", None),
    ("24.8", "an [x, y, w, h] box", lambda ctx: Session(ctx.bundle).predict(IMAGE, box=[30, 20, 10, 15]),
     r"empty or reversed.*for an \[x, y, w, h\] box pass \[x, y, x \+ w, y \+ h\]", None),
    # beyond the list
    ("+", "Birkhoff on an already compressed checkpoint", lambda ctx: refused_by_cli(
        cli("compress.birkhoff", _compressed(ctx), "--out", ctx.tmp / "again.safetensors")),
     r"already Birkhoff-compressed; use its checkpoint as it is", None),
    ("+", "SlimSAM on a compressed model", _slim_a_compressed_model,
     r"SlimSAM prunes dense models and this one is Birkhoff-compressed", None),
    ("+", "slimsam --images that does not exist", lambda ctx: refused_by_cli(
        cli("compress.slimsam", "--images", ctx.tmp / "nothing", "--out", ctx.tmp / "s.safetensors")),
     r"image folder .*nothing does not exist", None),
    ("+", "slimsam --out below a regular file", lambda ctx: refused_by_cli(
        cli("compress.slimsam", "--synthetic", "12", "--out", under_a_file(ctx))), r"afile is a file", None),
    ("+", "birkhoff --model-type unknown", lambda ctx: refused_by_cli(
        cli("compress.birkhoff", ctx.checkpoint, "--model-type", "vit_x", "--out", ctx.tmp / "o.safetensors")),
     r"invalid choice: 'vit_x'", None),
    ("12", "parity --min-iou 2",
     lambda ctx: refused_by_cli(cli("runtime.parity", ctx.bundle, "--min-iou", "2", "--out", ctx.tmp / "p.json")),
     r"min mask IoU 2 is outside 0..1", None),
]


@pytest.fixture
def ctx(tmp_path, tiny_checkpoint, tiny_bundle) -> Context:
    return Context(tmp_path, tiny_checkpoint, tiny_bundle)


@pytest.mark.parametrize("item, name, action, refusal, check", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input(ctx, item, name, action, refusal, check):
    if refusal is None:
        check(ctx, action(ctx))
        return
    with pytest.raises((ValueError, FileExistsError, RuntimeError)) as raised:
        action(ctx)
    message = str(raised.value)
    assert len(message) < 1200, f"{len(message)} characters"
    assert re.search(refusal, message), message
