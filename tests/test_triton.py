"""Serving on a real tritonserver (the nvidia-pytriton wheel's): a repository written by export.triton,
answered over gRPC and HTTP exactly as a local Session answers, by many clients at once, through
malformed requests and a server killed under load."""

from __future__ import annotations

import importlib.util

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from google.protobuf import text_format

from export.triton import RECORD, main as triton_main, write_repository
from runtime import Session
from runtime.backends.triton_backend import TritonError
from runtime.everything import MaskGenerator
from runtime.reference import parity_shapes
from runtime.serving.protocol import IMAGE_KEY, MODEL, UNKNOWN_IMAGE
from runtime.serving.server import TritonServer, free_port

tritonclient = pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")
if importlib.util.find_spec("pytriton") is None:  # located, not imported (installed without its dependencies)
    pytest.skip("the wheel carrying tritonserver (nvidia-pytriton) is not installed", allow_module_level=True)
from tritonclient.grpc import model_config_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def repository(tmp_path_factory, demo_bundle, demo_birkhoff_bundle):
    """samedge version 1: the demo bundle; version 2: its Birkhoff variant."""
    out = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(demo_bundle, out, version=1)
    write_repository(demo_birkhoff_bundle, out, version=2)
    return out


@pytest.fixture(scope="module")
def server(repository):
    with TritonServer(repository) as running:
        yield running


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    shapes = parity_shapes(4)
    return [shapes[f"shapes-{n}"] for n in range(4)]


def _same(local, remote) -> None:
    """Bit for bit: the server runs the same backend on the same pixels and prompts."""
    for ours, theirs in zip(local, remote):
        if ours is None:
            assert theirs is None
        else:
            np.testing.assert_array_equal(theirs, ours)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("version", [1, 2], ids=["fp32", "birkhoff"])
def test_remote_session_answers_as_local(server, demo_bundle, demo_birkhoff_bundle, images, protocol, version):
    address = server.grpc_url if protocol == "grpc" else server.http_url
    bundle = demo_bundle if version == 1 else demo_birkhoff_bundle
    with Session(bundle) as local, Session(f"{protocol}://{address}/{MODEL}/{version}") as remote:
        assert remote.backend.name == "triton" and remote.img_size == local.img_size
        image = images[0]
        for session in (local, remote):
            session.set_image(image)
        np.testing.assert_array_equal(remote.image_embedding, local.image_embedding)
        asks = [dict(points=[[60, 70]], labels=[1]),
                dict(points=[[60, 70], [150, 40]], labels=[1, 0], box=[20, 20, 200, 180], multimask_output=False)]
        for ask in asks:
            _same(local.predict(**ask), remote.predict(**ask))
        first = local.predict(points=[[60, 70]], labels=[1])
        refine = dict(points=[[60, 70]], labels=[1], mask_input=first.low_res_logits[:1])
        _same(local.predict(**refine), remote.predict(**refine))
        boxes = [[10, 10, 120, 120], [100, 60, 240, 200], [0, 0, 255, 255]]
        _same(local.predict_batch(boxes=boxes), remote.predict_batch(boxes=boxes))
        _same(local.predict_batch(image=images[1], points=np.array([[[30, 30]], [[200, 100]]]), labels=[[1], [1]],
                                  upscale=False),
              remote.predict_batch(image=images[1], points=np.array([[[30, 30]], [[200, 100]]]), labels=[[1], [1]],
                                   upscale=False))
        if protocol == "grpc":  # segment-everything: hundreds of prompt sets through the batcher
            settings = dict(points_per_side=16, pred_iou_thresh=0.6, stability_score_thresh=0.8, show_progress=False)
            ours, theirs = (MaskGenerator(s, **settings).generate(images[2]) for s in (local, remote))
            assert len(ours) == len(theirs) >= 3
            for mine, served in zip(ours, theirs):
                np.testing.assert_array_equal(served["segmentation"], mine["segmentation"])
                assert served["predicted_iou"] == mine["predicted_iou"]


def test_sixteen_concurrent_clients_each_get_their_own_masks(server, demo_bundle, images):
    """16 clients, four images, different prompts, all at once: each answer is its own local answer and
    differs from the others' (an answer from another client's image or prompt would be caught)."""
    asks = [(images[n % 4], [[20 + 13 * n, 30 + 11 * n]]) for n in range(16)]
    with Session(demo_bundle) as local:
        expected = [local.predict(image=image, points=point, labels=[1]) for image, point in asks]
    shared = Session(f"grpc://{server.grpc_url}/{MODEL}/1")  # one Session shared by threads, as a local one can be
    barrier = threading.Barrier(16)

    def client(n: int):
        image, point = asks[n]
        own = Session(f"grpc://{server.grpc_url}/{MODEL}/1") if n % 2 else shared
        barrier.wait()
        answers = [own.predict(image=image, points=point, labels=[1]) for _ in range(3)]
        return answers

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(client, range(16)))
    shared.close()
    for n, answers in enumerate(results):
        for answer in answers:
            _same(expected[n], answer)
    distinct = {expected[n].low_res_logits.tobytes() for n in range(16)}
    assert len(distinct) == 16  # the prompts were told apart, so a swapped answer would have failed above


def _raw(address: str):
    client = tritonclient.InferenceServerClient(address)

    def infer(feeds: dict, model_version: str = ""):
        inputs = []
        for name, value in feeds.items():
            tensor = tritonclient.InferInput(name, list(value.shape), {np.float32: "FP32", np.uint8: "UINT8",
                                                                       np.float64: "FP64"}[value.dtype.type])
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        return client.infer(MODEL, inputs, model_version=model_version)
    return infer


def test_malformed_requests_get_errors_naming_the_cause(server):
    infer = _raw(server.grpc_url)
    pixels = np.zeros((1, 3, 256, 256), np.float32)
    key = infer({"pixels": pixels}).as_numpy(IMAGE_KEY)
    prompts = {"point_coords": np.full((1, 1, 2), 50, np.float32), "point_labels": np.ones((1, 1), np.float32),
               "mask_input": np.zeros((1, 1, 64, 64), np.float32), "has_mask_input": np.zeros((1, 1), np.float32)}
    assert infer({IMAGE_KEY: key, **prompts}).as_numpy("low_res_masks").shape == (1, 4, 64, 64)
    refusals = [
        ({"pixels": pixels.astype(np.float64)}, "", "data-type is 'FP64'"),
        ({"pixels": np.zeros((1, 3, 4096, 4096), np.float32)}, "", "pixels"),  # a huge image, not resized
        ({"pixels": pixels}, "7", "version"),
        ({"pixels": pixels, **prompts}, "", "send the prompts in a second request"),
        ({IMAGE_KEY: np.zeros((1, 32), np.uint8), **prompts}, "", UNKNOWN_IMAGE),
        ({IMAGE_KEY: key, **{k: v for k, v in prompts.items() if k != "mask_input"}}, "", "missing ['mask_input']"),
        ({IMAGE_KEY: np.concatenate([key, key[:, ::-1]]), **{k: np.concatenate([v, v]) for k, v in prompts.items()}},
         "", "different image_keys"),
        ({"point_coords": prompts["point_coords"]}, "", "needs pixels"),
    ]
    for feeds, version, named in refusals:
        with pytest.raises(InferenceServerException, match=None) as refused:
            infer(feeds, version)
        assert named in str(refused.value), str(refused.value)
    # The server still answers after every refusal.
    assert infer({IMAGE_KEY: key, **prompts}).as_numpy("iou_predictions").shape == (1, 4)


def test_client_errors_name_the_fix(server):
    with pytest.raises(TritonError, match="no Triton server answers"):
        Session(f"grpc://127.0.0.1:{free_port()}/{MODEL}")
    with pytest.raises(TritonError, match=f"serves {MODEL}"):
        Session(f"grpc://{server.grpc_url}/segmenter")
    with pytest.raises(ValueError, match="not a samedge Triton address"):
        Session(f"grpc://{server.grpc_url}/{MODEL}/latest")
    with Session(f"grpc://{server.grpc_url}/{MODEL}") as newest:
        assert newest.bundle.url.endswith(f"/{MODEL}/2")  # pinned when opened: a later version never answers it
    with pytest.raises(ValueError, match="open it with backend triton"):
        Session(f"grpc://{server.grpc_url}/{MODEL}", backend="onnxruntime")


def test_restart_under_load_loses_no_request(tmp_path, demo_bundle, images):
    """The server killed while four clients predict, then started again on the same ports: every call
    returns its right answer (the clients retried, and sent their images again to the new server)."""
    repository = write_repository(demo_bundle, tmp_path / "repo")
    ports = dict(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    with Session(demo_bundle) as local:
        expected = [local.predict(image=images[n], points=[[100, 90]], labels=[1]) for n in range(4)]
    first = TritonServer(repository, **ports).start()
    killed = threading.Event()
    answers: dict[int, list] = {n: [] for n in range(4)}

    def client(n: int):
        with Session(f"grpc://{first.grpc_url}/{MODEL}") as remote:
            remote.set_image(images[n])
            while not killed.is_set() or len(answers[n]) < 12:
                answers[n].append(remote.predict(points=[[100, 90]], labels=[1]))

    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(client, n) for n in range(4)]
        while min(len(a) for a in answers.values()) < 3:
            threading.Event().wait(0.05)
        first.kill()
        second = TritonServer(repository, **ports)
        try:
            second.start()
            killed.set()
            for future in running:
                future.result(timeout=120)
        finally:
            second.stop()
            first.stop()
    for n in range(4):
        assert len(answers[n]) >= 12
        for answer in answers[n]:
            _same(expected[n], answer)


def test_repository_versions_and_record(tmp_path, demo_bundle, demo_birkhoff_bundle, capsys):
    out = tmp_path / "repo"
    write_repository(demo_bundle, out)
    assert triton_main([str(demo_birkhoff_bundle), "--out", str(out), "--version", "2", "--name", MODEL]) == 0
    assert triton_main([str(demo_bundle), "--out", str(out)]) == 2
    assert "already serves samedge version 1; pass --version 3" in capsys.readouterr().err
    assert triton_main([str(demo_bundle), "--out", str(tmp_path)]) == 2  # a folder that is no repository
    assert "not a repository samedge wrote" in capsys.readouterr().err
    # Triton reads one config per model: a version that would change it goes under another name.
    assert triton_main([str(demo_bundle), "--out", str(out), "--version", "3", "--flavour", "onnxruntime"]) == 2
    assert "write this bundle under another --name" in capsys.readouterr().err
    record = __import__("json").loads((out / RECORD).read_text())
    assert sorted(record["models"][MODEL]) == ["1", "2"]
    assert all((out / name).is_file() for name in record["files"])
    config = text_format.Parse((out / MODEL / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    inputs = {tensor.name: list(tensor.dims) for tensor in config.input}
    assert inputs["pixels"] == [3, 256, 256] and inputs[IMAGE_KEY] == [32] and inputs["mask_input"] == [1, 64, 64]
    assert {tensor.name for tensor in config.output} >= {IMAGE_KEY, "iou_predictions", "low_res_masks", "masks"}


def test_server_command_starts_and_stops_cleanly(repository):
    """python -m runtime.serving.server: ready on the ports asked, answering, and gone after SIGTERM."""
    import signal
    import subprocess
    import sys
    import urllib.request

    http, grpc = free_port(), free_port()
    command = [sys.executable, "-m", "runtime.serving.server", str(repository), "--http-port", str(http),
               "--grpc-port", str(grpc), "--metrics-port", str(free_port()), "--model-control-mode", "explicit",
               "--load-model", MODEL]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        line = process.stdout.readline()
        assert f"gRPC 127.0.0.1:{grpc}" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/models/{MODEL}/ready", timeout=5) as answer:
            assert answer.status == 200
        with Session(f"http://127.0.0.1:{http}/{MODEL}/1") as remote:
            assert remote.predict(image=parity_shapes(1)["shapes-0"], points=[[50, 50]], labels=[1]).masks.any()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    with pytest.raises(OSError):  # the server is gone, not left behind the launcher
        urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/live", timeout=5)


def test_build_target_triton(tmp_path, capsys):
    from export.build import main as build_main

    out = tmp_path / "demo-triton"
    assert build_main(["--target", "triton", "--skip-parity", "--out", str(out)]) == 0
    assert "serve it with python -m runtime.serving.server" in capsys.readouterr().out
    assert (out / RECORD).is_file() and (out / MODEL / "1" / "bundle" / "manifest.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["demo-triton"]  # the bundle built beside it is gone
