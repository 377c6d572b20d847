"""The samedge model inside Triton's Python backend: a bundle run by samedge's own backends
(ONNX Runtime, OpenVINO or TensorRT, as `Session` opens them), speaking runtime/serving/protocol.py.

A repository's `samedge/<version>/model.py` imports `TritonPythonModel` from here; the bundle it
serves is `samedge/<version>/bundle/` (export/triton.py writes both). Triton's dynamic batcher hands
`execute` several requests at once: encodes run first, then the prompt sets of all requests on the
same image and of the same layout run as one batch-decoder call (up to MAX_PROMPTS sets), and each
request gets its own rows back.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..backends import make_backend
from ..bundle import Bundle, open_bundle, sha256_file
from ..signature import DECODER_OUTPUTS, PROMPT_INPUTS
from .bridge import refusal, to_numpy, to_triton
from .protocol import (BATCH_OUTPUTS, ENCODER_INPUT, ENGINE_NATIVE, HAS_MASK_INPUT, IMAGE_KEY, KEY_BYTES,
                       MANIFEST_PARAMETER, MASKS, MAX_PROMPTS, NATIVE_SUFFIXES, ORIGINAL_SIZE, PIXELS, RECORD,
                       UNKNOWN_IMAGE,
                       RequestError, image_key, request_kind)

DEFAULT_CACHE_MEGABYTES = 1024  # vit_h's embedding is 4 MiB, SAM 2's three features 13 MiB at 1024 px


class FeatureStore:
    """Image features by key, the least recently used dropped past `limit_bytes`."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self._held: OrderedDict[bytes, dict[str, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, key: bytes, features: dict[str, np.ndarray]) -> None:
        with self._lock:
            if key in self._held:
                self._held.move_to_end(key)
                return
            self._held[key] = features
            self._bytes += sum(array.nbytes for array in features.values())
            while self._bytes > self.limit_bytes and len(self._held) > 1:
                _, dropped = self._held.popitem(last=False)
                self._bytes -= sum(array.nbytes for array in dropped.values())

    def holds(self, key: bytes) -> bool:
        """Whether `key` is held (then marked as just used)."""
        with self._lock:
            if key in self._held:
                self._held.move_to_end(key)
                return True
            return False

    def get(self, key: bytes) -> dict[str, np.ndarray]:
        with self._lock:
            features = self._held.get(key)
            if features is None:
                raise RequestError(f"{UNKNOWN_IMAGE} {key.hex()[:16]}...: this server does not hold that image (it "
                                   "was evicted, or the server restarted): send the image again (an encode request)")
            self._held.move_to_end(key)
            return features

    def __len__(self) -> int:
        return len(self._held)


class SamedgeModel:
    """Triton's Python-backend model interface: initialize, execute, finalize."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        parameters = {name: value.get("string_value", "") for name, value in config.get("parameters", {}).items()}
        if parameters.get("engine") == ENGINE_NATIVE:  # the bundle's models are the repository's native models
            self.bundle = Bundle(root=Path(args["model_repository"]), encoder=None, decoder=None,
                                 manifest=json.loads(parameters[f"{MANIFEST_PARAMETER}_{args['model_version']}"]))
            self.backend = NativeModels(config["name"], int(args["model_version"]), self.bundle)
            check_native_files(Path(args["model_repository"]).parent, config["name"], args["model_version"])
        else:
            folder = Path(args["model_repository"]) / args["model_version"] / "bundle"
            self.bundle = open_bundle(folder, verify=True)  # its files against the hashes in its manifest
            self.backend = make_backend(self.bundle, parameters.get("backend") or "auto")
            if getattr(self.backend, "takes_resized_image", False):
                raise RuntimeError(f"the {self.backend.name} backend opened {folder} with encoder_preprocess.onnx; "
                                   "the samedge model takes normalised pixels: rewrite the repository with export.triton")
        self.features = self.bundle.features
        self.store = FeatureStore(int(parameters.get("cache_megabytes") or DEFAULT_CACHE_MEGABYTES) << 20)

    def execute(self, requests) -> list:
        import triton_python_backend_utils as pb_utils

        answers: list = [None] * len(requests)
        prompted: list[tuple[int, dict]] = []
        for index, request in enumerate(requests):
            try:
                feeds = {tensor.name(): to_numpy(tensor) for tensor in request.inputs()}
                kind = request_kind(feeds)
                if kind == "encode":
                    answers[index] = self._encode(feeds[PIXELS])
                elif kind == "features":
                    answers[index] = self._held(feeds[IMAGE_KEY], rows=1)
                elif kind == "decode":
                    answers[index] = self._decode(feeds)
                else:
                    self._key(feeds[IMAGE_KEY])  # one image per request, checked before requests are merged
                    prompted.append((index, feeds))
            except Exception as err:  # each request gets its own error; the others are answered
                answers[index] = refusal(err)
        for group in _same_image_and_layout(prompted):
            try:
                for index, outputs in self._decode_batch(group):
                    answers[index] = outputs
            except Exception as err:
                for index, _ in group:
                    answers[index] = refusal(err)
        return [pb_utils.InferenceResponse(output_tensors=[to_triton(name, value) for name, value in answer.items()])
                if isinstance(answer, dict) else answer for answer in answers]

    def finalize(self) -> None:
        self.backend.close()

    def _encode(self, pixels: np.ndarray) -> dict:
        if pixels.shape[0] != 1:
            raise RequestError(f"{PIXELS} holds {pixels.shape[0]} images; send one image per request")
        key = image_key(pixels)
        if not self.store.holds(key.tobytes()):  # an image another client sent is not encoded again
            self.store.put(key.tobytes(), self.backend.encode(pixels))
        return {IMAGE_KEY: key}

    def _key(self, keys: np.ndarray) -> bytes:
        if keys.ndim != 2 or keys.shape[1] != KEY_BYTES or keys.dtype != np.uint8 or not len(keys):
            raise RequestError(f"{IMAGE_KEY} must be uint8 [N, {KEY_BYTES}] (an encode request's answer), got "
                               f"{keys.dtype} {list(keys.shape)}")
        if (keys != keys[:1]).any():
            raise RequestError(f"the prompt sets of one request name different {IMAGE_KEY}s; send one request per image")
        return keys[0].tobytes()

    def _held(self, keys: np.ndarray, rows: int, what: str = "a features request") -> dict:
        if len(keys) != rows:
            raise RequestError(f"{what} holds one row; got {len(keys)}")
        return dict(self.store.get(self._key(keys)))

    def _decode(self, feeds: dict) -> dict:
        """SAM 1's official decoder: one prompt set, masks upscaled to orig_im_size in the graph."""
        if not self.bundle.official_decoder:
            raise RequestError(f"this bundle's decoder does not take {ORIGINAL_SIZE} (SAM 2): send the prompts "
                               "without it (a decode_batch request) and upscale low_res_masks")
        features = self._held(feeds.pop(IMAGE_KEY), rows=1, what=f"a request with {ORIGINAL_SIZE} (one prompt set)")
        prompts = _prompts(feeds, extra=(ORIGINAL_SIZE,))
        prompts[ORIGINAL_SIZE] = prompts[ORIGINAL_SIZE].reshape(2)
        masks, scores, low_res = self.backend.decode({**features, **prompts})
        return {MASKS: masks, BATCH_OUTPUTS[0]: scores, BATCH_OUTPUTS[1]: low_res}

    def _decode_batch(self, group: list[tuple[int, dict]]):
        """Every request of `group` (one image, one prompt layout) in decoder calls of up to MAX_PROMPTS sets."""
        features = self.store.get(self._key(group[0][1][IMAGE_KEY]))
        prompts = [_prompts({name: value for name, value in feeds.items() if name != IMAGE_KEY})
                   for _, feeds in group]
        merged = {name: np.concatenate([one[name] for one in prompts]) for name in prompts[0]}
        count = len(merged[HAS_MASK_INPUT])
        answers = [self.backend.decode_batch({**features, **{name: value[start:start + MAX_PROMPTS]
                                                             for name, value in merged.items()}})
                   for start in range(0, count, MAX_PROMPTS)]
        scores, low_res = (np.concatenate([answer[part] for answer in answers]) for part in range(2))
        start = 0
        for (index, _), one in zip(group, prompts):
            rows = slice(start, start + len(one[HAS_MASK_INPUT]))
            start = rows.stop
            yield index, {BATCH_OUTPUTS[0]: scores[rows], BATCH_OUTPUTS[1]: low_res[rows]}


class NativeModels:
    """The bundle's models as the repository's native Triton models (onnxruntime or tensorrt platform, written
    by export.triton --flavour), run by business-logic scripting: `<name>_encoder`, `<name>_batch_decoder`
    and, for SAM 1, `<name>_decoder` (the official decoder)."""

    def __init__(self, name: str, version: int, bundle: Bundle):
        self.encoder, self.batch_decoder, self.decoder = (name + suffix for suffix in NATIVE_SUFFIXES)
        self.version = version  # the native models' version of the same number: this version's bundle
        self.features = bundle.features

    def encode(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return self._run(self.encoder, {ENCODER_INPUT: pixels}, self.features)

    def decode(self, feeds: dict):
        answer = self._run(self.decoder, feeds, DECODER_OUTPUTS)
        return tuple(answer[name] for name in DECODER_OUTPUTS)

    def decode_batch(self, feeds: dict):
        answer = self._run(self.batch_decoder, feeds, BATCH_OUTPUTS)
        return tuple(answer[name] for name in BATCH_OUTPUTS)

    def close(self) -> None:
        pass  # Triton owns the models

    def _run(self, model: str, feeds: dict, outputs) -> dict[str, np.ndarray]:
        import triton_python_backend_utils as pb_utils

        options = {}
        if hasattr(pb_utils, "PreferredMemory"):  # outputs in CPU memory: a TensorRT model's stay on its GPU
            options["preferred_memory"] = pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)
        request = pb_utils.InferenceRequest(model_name=model, model_version=self.version,
                                            requested_output_names=list(outputs),
                                            inputs=[to_triton(name, value) for name, value in feeds.items()], **options)
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"{model}: {response.error().message()}")
        return {name: to_numpy(pb_utils.get_output_tensor_by_name(response, name)) for name in outputs}


def check_native_files(repository: Path, name: str, version: str) -> None:
    """The native models' files of this version against the SHA-256 the repository's record holds for them:
    the samedge model refuses to front models that were edited or copied from another repository."""
    record = json.loads((repository / RECORD).read_text())
    prefixes = tuple(f"{name}{suffix}/{version}/" for suffix in NATIVE_SUFFIXES)
    listed = {path: digest for path, digest in record["files"].items() if path.startswith(prefixes)}
    for path, digest in listed.items():
        if sha256_file(repository / path) != digest:
            raise RuntimeError(f"{repository / path} does not match {RECORD}: it was edited or copied from another "
                               "repository; write the repository again with python -m export.triton")
    if not listed:
        raise RuntimeError(f"{repository / RECORD} lists no native models of {name} version {version}; write the "
                           "repository again with python -m export.triton")


def _same_image_and_layout(prompted: list[tuple[int, dict]]) -> list[list[tuple[int, dict]]]:
    """Requests that can share a decoder call: the same image key and the same prompt shapes."""
    groups: dict[tuple, list] = {}
    for index, feeds in prompted:
        signature = (feeds[IMAGE_KEY][:1].tobytes(),
                     tuple(sorted((name, value.shape[1:], str(value.dtype)) for name, value in feeds.items())))
        groups.setdefault(signature, []).append((index, feeds))
    return list(groups.values())


def _prompts(feeds: dict, extra: tuple = ()) -> dict:
    """The decoder's prompt inputs from a request's, checked: all present, nothing else, one row count."""
    expected = set(PROMPT_INPUTS) | set(extra)
    if set(feeds) != expected:
        missing, unknown = sorted(expected - set(feeds)), sorted(set(feeds) - expected)
        raise RequestError(f"a prompt request takes {IMAGE_KEY} and {sorted(expected)}" +
                           (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    rows = {len(value) for value in feeds.values()}
    if len(rows) != 1:
        raise RequestError(f"the prompt inputs hold different numbers of prompt sets: "
                           f"{ {name: len(value) for name, value in feeds.items()} }")
    prompts = {name: np.ascontiguousarray(value, np.float32) for name, value in feeds.items()}
    prompts[HAS_MASK_INPUT] = prompts[HAS_MASK_INPUT].reshape(-1)  # [N, 1] on the wire
    return prompts


TritonPythonModel = SamedgeModel
