"""Session with a backend object, and closing backends and sessions (real ONNX Runtime and torch models)."""

from __future__ import annotations

import gc
import platform
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

from runtime import BundleError, ClosedError, Session, open_bundle
from runtime.backends import OnnxRuntimeBackend

IMAGE = np.random.default_rng(3).integers(0, 256, (40, 56, 3), dtype=np.uint8)
PROMPTS = [
    {"points": [[20, 15]], "labels": [1]},
    {"points": [[20, 15], [50, 35]], "labels": [1, 0], "multimask_output": False},
    {"box": [5, 4, 40, 30], "multimask_output": False},
]


def ort_backend(bundle_path) -> OnnxRuntimeBackend:
    bundle = open_bundle(bundle_path)
    return OnnxRuntimeBackend(bundle.encoder, bundle.decoder, img_size=bundle.img_size)


def test_a_backend_object_predicts_as_the_backend_by_name(tiny_bundle):
    by_name = Session(tiny_bundle, backend="onnxruntime")
    by_object = Session(tiny_bundle, backend=ort_backend(tiny_bundle))
    assert (by_object.img_size, by_object.low_res_size) == (by_name.img_size, by_name.low_res_size) == (64, 32)
    by_name.set_image(IMAGE)
    by_object.set_image(IMAGE)
    np.testing.assert_allclose(by_object.image_embedding, by_name.image_embedding, rtol=0, atol=1e-6)
    for prompt in PROMPTS:
        want, got = by_name.predict(**prompt), by_object.predict(**prompt)
        assert got.masks.shape == want.masks.shape and got.masks.any()
        np.testing.assert_array_equal(got.masks, want.masks)
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, rtol=0, atol=1e-5)


def test_a_backend_object_for_another_image_size_is_refused(tiny_bundle, demo_bundle):
    demo = ort_backend(demo_bundle)  # 256 px; the tiny bundle's manifest says 64
    with pytest.raises(BundleError, match="takes 256 px images but the manifest of .* says 64: they do not belong"):
        Session(tiny_bundle, backend=demo)
    assert not demo.closed  # refused, so still the caller's
    features = demo.encode(np.zeros((1, 3, 256, 256), np.float32))
    assert features["image_embeddings"].shape == (1, 128, 16, 16)  # demo: 128 channels


def test_a_backend_object_does_not_skip_the_hash_check(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    with open(copy / "decoder_single.onnx", "ab") as f:  # a file the backend never opens
        f.write(b"\0")
    backend = ort_backend(tiny_bundle)
    with pytest.raises(BundleError, match="decoder_single.onnx does not match the manifest"):
        Session(copy, backend=backend)
    assert Session(copy, backend=backend, verify=False).predict(IMAGE, **PROMPTS[0]).masks.shape == (3, 40, 56)


def test_what_is_not_a_backend_is_refused(tiny_bundle):
    with pytest.raises(TypeError, match="backend must be one of .* or a backend object .* got dict"):
        Session(tiny_bundle, backend={"name": "onnxruntime"})
    with pytest.raises(ValueError, match="unknown backend 'onnx'"):
        Session(tiny_bundle, backend="onnx")
    with pytest.raises(ValueError, match="give them to the backend object's constructor"):
        Session(tiny_bundle, backend=ort_backend(tiny_bundle), low_memory=True)


def test_a_closed_backend_refuses_work_and_closes_again_quietly(tiny_bundle):
    with ort_backend(tiny_bundle) as backend:
        assert not backend.closed
        embedding = backend.encode(np.zeros((1, 3, 64, 64), np.float32))
    assert backend.closed
    with pytest.raises(ClosedError, match="this OnnxRuntimeBackend was closed .*open a new one"):
        backend.encode(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ClosedError, match="this OnnxRuntimeBackend was closed"):
        backend.decode({"image_embeddings": embedding})
    backend.close()
    assert backend.closed and (backend.img_size, backend.embedding_size) == (64, 8)


@pytest.mark.parametrize("backend_name", ["onnxruntime", "openvino"])
def test_closing_a_session_closes_its_backend_and_frees_the_models(tiny_bundle, backend_name):
    if backend_name == "openvino":
        pytest.importorskip("openvino", reason='the cpu extra is not installed (pip install "samedge[cpu]")')
    with Session(tiny_bundle, backend=backend_name) as session:
        session.set_image(IMAGE)
        assert session.predict(**PROMPTS[0]).masks.shape == (3, 40, 56)
        backend = session.backend
        models = [weakref.ref(backend.encoder), weakref.ref(backend.decoder)]
    gc.collect()
    assert session.closed and backend.closed
    # The Session and its backend are still referenced here; their models must be gone.
    assert [model() for model in models] == [None, None]
    for use in (lambda: session.predict(**PROMPTS[0]), lambda: session.set_image(IMAGE),
                lambda: session.predict(IMAGE, **PROMPTS[0]), lambda: session.image_embedding):
        with pytest.raises(ClosedError, match="this Session was closed \\(close\\(\\) or the end of its with block\\)"):
            use()
    session.close()


def test_closing_the_torch_backend_frees_the_model(tiny_bundle):
    session = Session(tiny_bundle, backend="torch")
    want = Session(tiny_bundle).predict(IMAGE, **PROMPTS[0])
    got = session.predict(IMAGE, **PROMPTS[0])
    np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, rtol=0,
                               atol=1e-3 * np.abs(want.low_res_logits).max())  # parity's threshold
    model = weakref.ref(session.backend.model)
    session.close()
    gc.collect()
    assert model() is None
    with pytest.raises(ClosedError, match="this TorchBackend was closed"):
        session.backend.encode(np.zeros((1, 3, 64, 64), np.float32))


# A fresh process frees 64 MiB in 4 MiB blocks, each pinned between small ones left allocated
# (256 KiB, as a run's freed tensors lie between live ones); prints how much stayed resident.
_FREED_BLOCKS_SCRIPT = """
import ctypes, sys
from runtime.backends.ort_backend import return_freed_tensors
if sys.argv[1] == "set":
    assert return_freed_tensors()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) * 1024
big = libc.malloc(16 << 20); ctypes.memset(big, 1, 16 << 20); libc.free(big)  # glibc's threshold rises to 16 MiB
before = rss()
blocks = []
for _ in range(16):
    blocks.append(libc.malloc(4 << 20)); ctypes.memset(blocks[-1], 1, 4 << 20); libc.malloc(256 << 10)
for block in blocks:
    libc.free(block)
print(rss() - before)
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_low_memory_has_freed_tensors_returned_to_the_system():
    def resident_after_free(mode):
        result = subprocess.run([sys.executable, "-c", _FREED_BLOCKS_SCRIPT, mode], capture_output=True, text=True,
                                check=True, cwd=Path(__file__).parents[1])
        return int(result.stdout)

    assert resident_after_free("default") > 48 << 20  # what low_memory sessions paid before
    assert resident_after_free("set") < 4 << 20

