"""A backend enters by one registration (runtime/backends/registry.py) and is then everywhere:
Session, runtime.predict, runtime.parity, runtime.everything and the benchmarks' choices."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks import peak_memory
from runtime import Session, everything, parity, predict
from runtime import backends
from runtime.backends import OnnxRuntimeBackend, make_backend, register, registry, unregister
from runtime.backends.base import BackendOptions
from runtime.bundle import open_bundle

IMAGE = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)


class SingleThreadedOnnxRuntime(OnnxRuntimeBackend):
    """A real backend of its own: ONNX Runtime's CPU provider with one intra-op thread, for a
    device that shares its cores (and no low_memory)."""

    name = "ort_single_thread"
    takes_options = frozenset()

    @classmethod
    def _open(cls, bundle, options: BackendOptions):
        return super()._open(bundle, options._replace(providers=("CPUExecutionProvider",)))


@pytest.fixture
def registered():
    register(SingleThreadedOnnxRuntime.name, SingleThreadedOnnxRuntime, "ONNX Runtime, one thread")
    yield SingleThreadedOnnxRuntime.name
    unregister(SingleThreadedOnnxRuntime.name)


def test_one_registration_reaches_session_and_answers_as_onnx_runtime(registered, tiny_bundle):
    assert registered in backends.BACKENDS and registered in registry.choices()
    with Session(tiny_bundle, backend=registered) as ours, Session(tiny_bundle, backend="onnxruntime") as theirs:
        assert isinstance(ours.backend, SingleThreadedOnnxRuntime)
        assert ours.backend_choice.reason == "asked for by name"
        got = ours.predict(IMAGE, points=[[30, 20]], labels=[1])
        want = theirs.predict(IMAGE, points=[[30, 20]], labels=[1])
        np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, atol=1e-5)
        batch = ours.predict_batch(points=[[[30, 20]], [[10, 10]]], labels=[[1], [1]])
        assert batch.scores.shape == (2, 3)
    with pytest.raises(ValueError, match="low_memory: not an option of the ort_single_thread backend"):
        Session(tiny_bundle, backend=registered, low_memory=True)
    assert isinstance(make_backend(open_bundle(tiny_bundle), registered), SingleThreadedOnnxRuntime)


def test_the_commands_offer_it_and_run_it(registered, tiny_bundle, tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(IMAGE).save(image)
    assert predict.main([str(tiny_bundle), str(image), "--point", "30,20", "--backend", registered,
                         "--out", str(tmp_path / "o.png")]) == 0
    assert f"backend: {registered} (asked for by name)" in capsys.readouterr().out
    report = parity.run_parity(tiny_bundle, images={"noise": IMAGE}, show_progress=False, backend=registered,
                               everything=False, out=tmp_path / "p.json")
    assert report["backend"] == registered and report["passed"], parity.summary(report)
    assert json.loads((tmp_path / "p.json").read_text())["batch"]["passed"]
    for main in (parity.main, everything.main):
        with pytest.raises(SystemExit):  # argparse's --help: the choices listed come from the registry
            main(["--help"])
        assert registered in capsys.readouterr().out
    assert peak_memory.child(tiny_bundle, registered, "astronaut") > 0
    with pytest.raises(SystemExit):
        peak_memory.main(["--help"])
    assert registered in capsys.readouterr().out


def test_after_unregistering_it_is_unknown_everywhere(tiny_bundle):
    assert "ort_single_thread" not in backends.BACKENDS
    with pytest.raises(ValueError, match="unknown backend 'ort_single_thread'; choose one of"):
        Session(tiny_bundle, backend="ort_single_thread")
    with pytest.raises(SystemExit):
        predict.main([str(tiny_bundle), "x.png", "--backend", "ort_single_thread"])


def test_names_must_be_identifiers_and_not_auto():
    for bad in ("auto", "two words", ""):
        with pytest.raises(ValueError, match="use an identifier other than 'auto'"):
            register(bad, OnnxRuntimeBackend, "")
