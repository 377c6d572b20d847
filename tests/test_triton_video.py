"""SAM 2.1 streams tracked on a real tritonserver: one Triton sequence per stream, answered as a local
StreamTracker answers, streams kept apart, state freed at the end of a stream or after its idle limit."""

from __future__ import annotations

import importlib.util

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from compress.demo.clips import moving_shapes
from export.triton import write_repository
from runtime import Session
from runtime.backends.triton_backend import TritonError
from runtime.serving.server import TritonServer
from runtime.serving.stream_client import RemoteStreamTracker
from runtime.stream import StreamTracker

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")
if importlib.util.find_spec("pytriton") is None:  # located, not imported (installed without its dependencies)
    pytest.skip("the wheel carrying tritonserver (nvidia-pytriton) is not installed", allow_module_level=True)

# Well past a step on 2 busy cores: a live stream must not be taken for an idle one (5 s was not, with the
# cores shared by four other test runs: a stream was freed between two of its steps).
IDLE_SECONDS = 10.0


@pytest.fixture(scope="module")
def server(tmp_path_factory, sam2_video_bundle):
    out = write_repository(sam2_video_bundle, tmp_path_factory.mktemp("triton") / "repo", backend="onnxruntime",
                           stream_idle_seconds=IDLE_SECONDS)
    assert (out / "samedge_tracker" / "config.pbtxt").is_file()
    with TritonServer(out, exit_timeout=2) as running:
        yield running


SCRIPTS = {  # two streams: different clips, objects and prompts
    "a": dict(seed=11, prompts={0: [(1, dict(points=[[64, 48]], labels=[1])), (2, dict(box=[20, 10, 90, 60]))],
                                4: [(1, dict(points=[[70, 50], [20, 20]], labels=[1, 0]))]}),
    "b": dict(seed=12, prompts={0: [(7, dict(points=[[30, 30]], labels=[1]))],
                                3: [(8, dict(box=[50, 40, 120, 90]))]}),
}


def _run(tracker, script) -> list:
    answers = []
    for index, frame in enumerate(moving_shapes(7, 96, 128, seed=script["seed"])):
        masks = tracker.step(frame)
        for obj_id, prompt in script["prompts"].get(index, []):
            masks = tracker.add_new_points_or_box(obj_id, **prompt)
        answers.append((list(tracker.obj_ids), masks.copy()))
    return answers


def test_streams_answer_as_local_trackers_and_stay_apart(server, sam2_video_bundle):
    expected = {}
    with Session(sam2_video_bundle, backend="onnxruntime") as session:  # as the server: trackers share a Session
        for name, script in SCRIPTS.items():
            with StreamTracker(session) as local:
                expected[name] = _run(local, script)

    def remote(name: str):
        with RemoteStreamTracker(f"grpc://{server.grpc_url}/samedge") as tracker:
            return _run(tracker, SCRIPTS[name])

    with ThreadPoolExecutor(2) as pool:  # both streams at once, interleaved on the server
        served = dict(zip(SCRIPTS, pool.map(remote, SCRIPTS)))
    for name in SCRIPTS:
        assert len(served[name]) == len(expected[name]) == 7
        for (ids, masks), (local_ids, local_masks) in zip(served[name], expected[name]):
            assert ids == local_ids
            np.testing.assert_array_equal(masks, local_masks)
    assert expected["a"][-1][0] == [1, 2] and expected["b"][-1][0] == [7, 8]


def test_sam2_images_answer_as_local(server, sam2_video_bundle):
    """The repository's samedge model on a SAM 2 bundle: three features kept, the batch decoder, the clamp."""
    image = moving_shapes(1, 96, 128, seed=4)[0]
    with Session(sam2_video_bundle, backend="onnxruntime") as local, \
            Session(f"grpc://{server.grpc_url}/samedge") as remote:
        assert remote.bundle.url.endswith("/samedge/1")  # pinned to the newest version when opened
        for session in (local, remote):
            session.set_image(image)
        for ask in (dict(points=[[64, 48]], labels=[1]), dict(box=[20, 10, 90, 60], multimask_output=False)):
            ours, theirs = local.predict(**ask), remote.predict(**ask)
            for mine, served in zip(ours, theirs):
                np.testing.assert_array_equal(served, mine)
        ours, theirs = (s.predict_batch(boxes=[[0, 0, 60, 60], [30, 20, 120, 90]]) for s in (local, remote))
        for mine, served in zip(ours, theirs):
            np.testing.assert_array_equal(served, mine)
        assert set(remote.image_features) == {"high_res_feats_0", "high_res_feats_1", "image_embed"}


def test_stream_state_is_freed_at_its_end_and_after_idling(server):
    frames = moving_shapes(2, 96, 128, seed=3)
    url = f"grpc://{server.grpc_url}/samedge"
    ended = RemoteStreamTracker(url)
    ended.step(frames[0])
    ended.add_new_points_or_box(1, points=[[64, 48]], labels=[1])
    assert ended.streams_held == 1
    ended.close()
    with RemoteStreamTracker(url) as other:
        other.step(frames[0])
        assert other.streams_held == 1  # the ended stream's tracker is gone
    vanished = RemoteStreamTracker(url)  # never closed: a client that disconnected
    vanished.step(frames[0])
    time.sleep(IDLE_SECONDS + 1.5)
    with RemoteStreamTracker(url) as other:
        other.step(frames[0])
        assert other.streams_held == 1  # the vanished stream's tracker was freed after its idle limit
    # Triton freed its sequence slot too: going on without a START is refused.
    with pytest.raises(TritonError, match="START"):
        vanished.step(frames[1])
    # A prompt before any frame, and a bad frame, are refused with the reason.
    with RemoteStreamTracker(url) as fresh:
        with pytest.raises(TritonError, match="no frame yet"):
            fresh.add_new_points_or_box(1, points=[[1, 1]], labels=[1])
    with pytest.raises(ValueError, match="uint8 RGB"):
        RemoteStreamTracker(url).step(np.zeros((4, 4), np.uint8))
