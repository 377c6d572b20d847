"""The triton backend: a Session whose model runs in a Triton Inference Server.

    session = Session("grpc://gpu-box:8001/samedge")      # or http://gpu-box:8000/samedge, .../samedge/2
    session.set_image("photo.jpg")                        # the image goes to the server once
    masks, scores, logits = session.predict(points=[[120, 80]], labels=[1])

The server's samedge model (export/triton.py, runtime/serving/) keeps each image's embedding; this
client keeps the pixels too, so when the server no longer holds them (evicted, restarted) the image is
sent again and the request repeated. Pre- and post-processing run here, as a local Session runs them,
so the answers are a local Session's. A server that cannot be reached is retried for `RETRY_SECONDS`
(a restart under load), then refused; a request the server refuses is an error naming its reason.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..bundle import Bundle, BundleError
from ..serving.protocol import (BATCH_OUTPUTS, HAS_MASK_INPUT, IMAGE_KEY, MANIFEST_PARAMETER, MASKS, MAX_PROMPTS,
                                ORIGINAL_SIZE, PIXELS, PROTOCOL, PROTOCOL_PARAMETER, UNKNOWN_IMAGE)
from .base import BackendOptions, BaseBackend

SCHEMES = ("grpc", "http")
RETRY_SECONDS = 60.0  # a tritonserver restart with a vit_h model loads in about a minute
PIXELS_KEPT = "pixels"  # beside the key in an image's features: sent again when the server has forgotten them


class TritonError(RuntimeError):
    """The Triton server refused a request, or could not be reached; the message says which and why."""


def is_remote(source) -> bool:
    return isinstance(source, str) and source.split("://", 1)[0] in SCHEMES and "://" in source


class Address:
    """grpc://host:port/model[/version] or http://host:port/model[/version]."""

    def __init__(self, url: str):
        parsed = urlparse(url)
        parts = [part for part in parsed.path.split("/") if part]
        if parsed.scheme not in SCHEMES or not parsed.netloc or not 1 <= len(parts) <= 2 or (
                len(parts) == 2 and not parts[1].isdigit()):
            raise BundleError(f"{url} is not a samedge Triton address: use grpc://host:8001/samedge (or http://"
                              "host:8000/samedge), with /N after the model name for version N")
        self.url, self.protocol, self.host = url, parsed.scheme, parsed.netloc
        self.model, self.version = parts[0], (parts[1] if len(parts) == 2 else "")

    def client(self):
        """A new tritonclient for this address (one per thread: each holds its own connection)."""
        try:
            if self.protocol == "grpc":
                import tritonclient.grpc as triton
            else:
                import tritonclient.http as triton
        except ImportError:
            raise TritonError("the triton backend needs tritonclient: pip install \"samedge[serve]\"") from None
        return triton.InferenceServerClient(self.host)

    def request(self, feeds: dict[str, np.ndarray], outputs) -> tuple[list, list]:
        """tritonclient's inputs and requested outputs for `feeds` and the output names `outputs`."""
        if self.protocol == "grpc":
            import tritonclient.grpc as triton
        else:
            import tritonclient.http as triton
        from tritonclient.utils import np_to_triton_dtype

        inputs = []
        for name, value in feeds.items():
            tensor = triton.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        return inputs, [triton.InferRequestedOutput(name) for name in outputs]


def remote_bundle(url: str) -> Bundle:
    """The bundle a Triton server's samedge model serves, as its manifest describes it (no files here)."""
    address = Address(url)
    client = address.client()
    try:
        live = client.is_server_live()
    except Exception as err:
        raise TritonError(f"no Triton server answers at {address.host} ({_reason(err)}): start one with "
                          "python -m runtime.serving.server REPOSITORY, or check the address") from None
    if not live:
        raise TritonError(f"the Triton server at {address.host} is not live yet; try again when it is")
    try:
        config = client.get_model_config(address.model, address.version)
    except Exception as err:
        served = _served(client)
        raise TritonError(f"the Triton server at {address.host} has no model {address.model}"
                          f"{' version ' + address.version if address.version else ''} ready ({_reason(err)}); it "
                          f"serves {served or 'nothing'}") from None
    parameters = _parameters(config)
    if not address.version:  # pinned now: a version added later (poll mode) must not answer this Session's prompts
        address = Address(f"{address.url.rstrip('/')}/{_newest_version(client, address.model)}")
    if parameters.get(PROTOCOL_PARAMETER) != PROTOCOL:
        raise TritonError(f"{address.model} at {address.host} is not a samedge model of protocol {PROTOCOL} (its "
                          f"config says {parameters.get(PROTOCOL_PARAMETER)!r}): serve a repository written by "
                          "python -m export.triton")
    manifest = json.loads(parameters[f"{MANIFEST_PARAMETER}_{address.version}"])
    preprocessing = manifest["preprocessing"]
    return Bundle(root=Path(address.url), encoder=None, decoder=None, img_size=preprocessing["img_size"],
                  pixel_mean=tuple(preprocessing["pixel_mean"]), pixel_std=tuple(preprocessing["pixel_std"]),
                  manifest=manifest, url=address.url)


def _newest_version(client, model: str) -> str:
    metadata = client.get_model_metadata(model)
    versions = metadata["versions"] if isinstance(metadata, dict) else list(metadata.versions)
    return str(max(int(version) for version in versions))


def _parameters(config) -> dict[str, str]:
    if isinstance(config, dict):  # the HTTP client's JSON
        return {name: value.get("string_value", "") for name, value in config.get("parameters", {}).items()}
    return {name: value.string_value for name, value in config.config.parameters.items()}


def _served(client) -> str:
    try:
        index = client.get_model_repository_index()
    except Exception:
        return ""
    models = index if isinstance(index, list) else [json_model for json_model in index.models]
    names = [(m["name"] if isinstance(m, dict) else m.name) for m in models]
    return ", ".join(sorted(set(names)))


def _reason(err: Exception) -> str:
    text = getattr(err, "message", lambda: None)() if callable(getattr(err, "message", None)) else None
    return (text or str(err) or type(err).__name__).strip()


class TritonBackend(BaseBackend):
    name = "triton"
    max_prompts = MAX_PROMPTS
    batch_decoding = "native"

    def __init__(self, bundle: Bundle, embedding_size: int):
        self.address = Address(bundle.url)
        self.img_size = bundle.img_size
        self.embedding_size = embedding_size
        self.features = bundle.features
        self._local = threading.local()

    @classmethod
    def _open(cls, bundle, options: BackendOptions) -> "TritonBackend":
        if bundle.url is None:
            raise BundleError(f"the triton backend runs a model on a Triton server; {bundle.root} is a bundle here: "
                              "open it with another backend, or serve it (python -m export.triton) and open "
                              "grpc://host:8001/samedge")
        address = Address(bundle.url)
        config = address.client().get_model_config(address.model, address.version)
        outputs = config["output"] if isinstance(config, dict) else config.config.output
        dims = {(o["name"] if isinstance(o, dict) else o.name): list(o["dims"] if isinstance(o, dict) else o.dims)
                for o in outputs}
        return cls(bundle, int(dims[bundle.features[-1]][-1]))  # the embedding [C, h, w]

    @classmethod
    def verify_files(cls, bundle) -> None:
        """The server checks its bundle's files against their hashes when it loads the model."""

    def encode(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        self._ensure_open()
        pixels = np.ascontiguousarray(pixels, np.float32)
        answer = self._infer({PIXELS: pixels}, (IMAGE_KEY,))
        return {IMAGE_KEY: answer[IMAGE_KEY], PIXELS_KEPT: pixels}

    def decode(self, inputs: dict):
        answer = self._prompted(inputs, (MASKS, *BATCH_OUTPUTS), lambda prompts: {
            **prompts, ORIGINAL_SIZE: np.asarray(prompts[ORIGINAL_SIZE], np.float32).reshape(1, 2)})
        return answer[MASKS], answer[BATCH_OUTPUTS[0]], answer[BATCH_OUTPUTS[1]]

    def decode_batch(self, inputs: dict):
        answer = self._prompted(inputs, BATCH_OUTPUTS, lambda prompts: prompts)
        return answer[BATCH_OUTPUTS[0]], answer[BATCH_OUTPUTS[1]]

    def fetch_features(self, image: dict) -> dict[str, np.ndarray]:
        """The encoder's outputs for an image this backend encoded, from the server."""
        return self._prompted(image, self.features, lambda prompts: {})

    def _prompted(self, inputs: dict, outputs, shaped) -> dict:
        """A request on an encoded image; the image sent again first if the server no longer holds it."""
        self._ensure_open()
        key, pixels = inputs[IMAGE_KEY], inputs[PIXELS_KEPT]
        prompts = {name: np.ascontiguousarray(value, np.float32) for name, value in inputs.items()
                   if name not in (IMAGE_KEY, PIXELS_KEPT, *self.features)}
        if HAS_MASK_INPUT in prompts:
            prompts[HAS_MASK_INPUT] = prompts[HAS_MASK_INPUT].reshape(-1, 1)  # every input has the batch axis
        feeds = shaped(prompts)
        rows = len(feeds[HAS_MASK_INPUT]) if HAS_MASK_INPUT in feeds else 1
        for attempt in range(2):
            try:
                return self._infer({IMAGE_KEY: np.repeat(key, rows, axis=0), **feeds}, outputs)
            except _Forgotten:
                if attempt:
                    raise TritonError("the server forgot the image again right after it was sent: its embedding store "
                                      "is too small for its load; raise --cache-megabytes in export.triton") from None
                self._infer({PIXELS: pixels}, (IMAGE_KEY,))  # the same pixels, the same key

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self.address.client()
        return client

    def _infer(self, feeds: dict[str, np.ndarray], outputs) -> dict[str, np.ndarray]:
        """One request; retried while the server cannot be reached, up to RETRY_SECONDS."""
        from tritonclient.utils import InferenceServerException

        inputs, requested = self.address.request(feeds, outputs)
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                result = self._client().infer(self.address.model, inputs, model_version=self.address.version,
                                              outputs=requested)
                return {name: result.as_numpy(name) for name in outputs}
            except InferenceServerException as err:
                reason = _reason(err)
                if UNKNOWN_IMAGE in reason:
                    raise _Forgotten() from None
                if not _unreachable(err) or time.monotonic() > deadline:
                    raise TritonError(f"the Triton server at {self.address.host} refused the request to "
                                      f"{self.address.model}: {reason}") from None
            except (ConnectionError, OSError) as err:  # the HTTP client's, while the server is down
                if time.monotonic() > deadline:
                    raise TritonError(f"the Triton server at {self.address.host} could not be reached for "
                                      f"{RETRY_SECONDS:.0f} s ({err})") from None
            self._local.client = None  # a fresh connection for the next try
            time.sleep(0.5)

    def _release(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:  # this thread's connection; other threads' go with their clients
            client.close()
        self._local = threading.local()


class _Forgotten(Exception):
    """The server does not hold the image named."""


def _unreachable(err) -> bool:
    """The server is down or restarting, not refusing: worth trying again."""
    status = str(err.status() or "") if callable(getattr(err, "status", None)) else ""
    text = str(err)
    return ("UNAVAILABLE" in status or "UNAVAILABLE" in text or "Socket closed" in text
            or "failed to connect" in text.lower() or "not ready" in text.lower()
            or "Stub process" in text and "not healthy" in text)
