"""One Session shared by threads answers each thread about its own image; memory stays flat."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from runtime import Session

THREADS, ROUNDS = 8, 25


def _images(count: int) -> list[np.ndarray]:
    """Images of different sizes and content, so a swapped embedding or size shows."""
    rng = np.random.default_rng(5)
    return [rng.integers(0, 255, (40 + 3 * i, 64 - 2 * i, 3), dtype=np.uint8) for i in range(count)]


def _expected(bundle, images, backend):
    session = Session(bundle, backend=backend)
    return [session.predict(image, points=[[10, 12]], labels=[1]) for image in images]


def _same(got, want) -> bool:
    return (got.masks.shape == want.masks.shape and np.array_equal(got.masks, want.masks)
            and np.allclose(got.low_res_logits, want.low_res_logits, atol=1e-5))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("style", ["set_image then predict", "predict(image=...)"])
def test_threads_sharing_a_session_get_their_own_masks(tiny_bundle, style, backend):
    if backend == "openvino":
        pytest.importorskip("openvino", reason='the cpu extra is not installed (pip install "samedge[cpu]")')
    images = _images(THREADS)
    expected = _expected(tiny_bundle, images, backend)
    session = Session(tiny_bundle, backend=backend)

    def worker(index: int) -> int:
        wrong = 0
        for _ in range(ROUNDS):
            if style == "set_image then predict":
                session.set_image(images[index])
                got = session.predict(points=[[10, 12]], labels=[1])
            else:
                got = session.predict(images[index], points=[[10, 12]], labels=[1])
            wrong += not _same(got, expected[index])
        return wrong

    with ThreadPoolExecutor(THREADS) as pool:
        wrong = sum(pool.map(worker, range(THREADS)))
    assert wrong == 0, f"{wrong} of {THREADS * ROUNDS} answers were for another thread's image"


def test_an_image_set_in_one_thread_is_not_used_by_another(tiny_bundle):
    session = Session(tiny_bundle)
    session.set_image(_images(1)[0])
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(RuntimeError, match="no image set in this thread"):
            pool.submit(session.predict, points=[[10, 12]], labels=[1]).result()
    assert session.predict(points=[[10, 12]], labels=[1]).masks.shape == (3, 40, 64)


def _resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_memory_stays_flat_over_many_predictions_images_and_sessions(tiny_bundle):
    images = _images(4)
    session = Session(tiny_bundle)

    def workload(predictions: int, encodings: int, sessions: int):
        for i in range(predictions):
            session.predict(images[i % 4] if i % 50 == 0 else None, points=[[10, 12]], labels=[1])
        for i in range(encodings):
            session.set_image(images[i % 4])
        for _ in range(sessions):
            Session(tiny_bundle).predict(images[0], points=[[10, 12]], labels=[1])

    session.set_image(images[0])
    workload(100, 20, 20)  # warm up: allocator arenas and caches reach their working size
    before = _resident_mib()
    workload(600, 120, 120)  # 1000/200/200 took a minute of the suite's 20 (over budget with Triton's tests)
    growth = _resident_mib() - before
    # A leak of one embedding or one session per call would be tens to hundreds of MiB here.
    assert growth < 30, f"resident memory grew by {growth:.1f} MiB"
