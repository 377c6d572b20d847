"""Serving on Triton: requests per second and latency for 1, 4 and 16 concurrent clients, against a
local Session in the same run.

    python -m benchmarks.run serving [--requests 48] [--model demo]

A request is what a labelling client does per image (each request its own image): `set_image` and one
`predict_batch` of P prompt sets (P = 1 or 16 points, masks at image size), or, on an image already set, the `predict_batch`
alone (the embedding kept on the server). C client threads share the work of `--requests` requests.
"local": one Session in this process shared by the threads (it is thread-safe); "triton": each
thread's own Session("grpc://...") on the wheel's tritonserver, started here on a repository written
by export.triton, serving the same bundle with the same backend. The two run one after the other for
each setting, so machine noise falls on both. Server and clients share this machine's cores: the
figures measure the protocol's cost, not a server's capacity. Writes docs/benchmarks/serving.md.
"""

from __future__ import annotations

import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from export.triton import write_repository
from runtime import Session
from runtime.reference import parity_shapes
from runtime.serving.server import TritonServer

from .report import DOCS, Page, fmt, table
from .session_open import bundle_for

CLIENTS = (1, 4, 16)
PROMPTS = (1, 16)


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="demo", help="demo or a model type (seeded weights)")
    parser.add_argument("--requests", type=int, default=48, help="requests per setting (shared by the clients)")


def _work(images: list[np.ndarray], prompts: int, requests: int, row: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    work = []
    for n in range(requests):
        # Each request of each row its own image (one pixel differs): the server encodes an image it holds
        # only once, and the rows compare encoding every time on both sides.
        image = images[n % len(images)].copy()
        image[0, 0] = [n % 256, n // 256 % 256, row]
        h, w = image.shape[:2]
        points = (rng.random((prompts, 1, 2)) * [w, h]).astype(np.float32)
        work.append((image, points))
    return work


def run_clients(open_session, clients: int, work, with_image: bool, shared=None) -> dict:
    """Requests per second over the whole run, p50 and p99 seconds of one request. `shared`: a Session the
    clients use and the caller closes."""
    sessions = [open_session() for _ in range(clients)]
    latencies: list[float] = []
    lock = threading.Lock()
    shares = [work[n::clients] for n in range(clients)]

    def client(n: int) -> None:
        session = sessions[n]
        if not with_image:
            session.set_image(shares[n][0][0])
        for image, points in shares[n]:
            start = time.perf_counter()
            if with_image:
                session.set_image(image)
            session.predict_batch(points=points, labels=np.ones(points.shape[:2], np.float32))
            with lock:
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - start
    for session in set(sessions):
        if session is not shared:
            session.close()
    return {"rps": len(latencies) / elapsed, "p50": float(np.percentile(latencies, 50)),
            "p99": float(np.percentile(latencies, 99))}


def measure(args) -> Page:
    bundle = bundle_for(args.model)
    shapes = parity_shapes(4)
    images = [shapes[f"shapes-{n}"] for n in range(4)]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        repository = write_repository(bundle, Path(scratch) / "repo")
        with TritonServer(repository) as server, Session(bundle) as local:
            url = f"grpc://{server.grpc_url}/samedge"
            backend = local.backend.name
            modes = {"local": lambda: local, "triton": lambda: Session(url)}
            for session in (local, Session(url)):  # warm-up: first runs allocate
                session.predict_batch(image=images[0], points=np.zeros((16, 1, 2), np.float32) + 50,
                                      labels=np.ones((16, 1)))
            for with_image in (True, False):
                for prompts in PROMPTS:
                    for clients in CLIENTS:
                        work = _work(images, prompts, args.requests, row=len(rows))
                        found = {mode: run_clients(opener, clients, work, with_image, shared=local)
                                 for mode, opener in modes.items()}
                        rows.append(["image + prompts" if with_image else "prompts", prompts, clients,
                                     *(fmt(found[mode][key], spec) for mode in modes
                                       for key, spec in (("rps", ".1f"), ("p50", ".3f"), ("p99", ".3f"))),
                                     fmt(found["triton"]["rps"] / found["local"]["rps"], ".2f")])
                        print(rows[-1], flush=True)
    intro = (f"The {args.model} bundle (backend {backend} in both), {args.requests} requests per row. "
             "`image + prompts`: set_image and one predict_batch of P points; `prompts`: the predict_batch alone on "
             "an image each client set before the clock. local: one Session shared by C threads; triton: each "
             "thread's own Session on grpc://, the wheel's tritonserver (Python backend, one model instance, dynamic "
             "batching) on this machine, sharing its cores with the clients. rps: requests per second over the run; "
             "p50/p99: seconds of one request. ratio: triton's rps over local's, measured one after the other.")
    body = table(["request", "P", "clients", "local rps", "local p50 (s)", "local p99 (s)", "triton rps",
                  "triton p50 (s)", "triton p99 (s)", "triton/local rps"], rows)
    return Page(DOCS / "serving.md", "Serving on Triton: requests per second and latency", intro, body)
