"""`Session`: SAM prompts in, masks out, from a bundle, with no torch needed."""

from __future__ import annotations

import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from .backends import Backend, BackendOptions, Choice, Closable, abilities, registry
from .backends.base import required_batch_decoder
from .backends.triton_backend import is_remote, remote_bundle
from .bundle import BundleError, open_bundle
from .geometry import geometry
from .images import load_image
from .prompts import batch_prompt_inputs, prompt_inputs

MASK_THRESHOLD = 0.0  # logits above this are mask pixels, as in segment_anything
# Prompt sets per decoder call in predict_batch: the TensorRT profile's maximum
# (export/tensorrt_build.py), and a bound on the decoder's memory on any backend.
PROMPTS_PER_CALL = 64


class Prediction(NamedTuple):
    """Same meaning and order as `segment_anything.SamPredictor.predict`'s result."""

    masks: np.ndarray  # bool [M, H, W]; M = 3 with multimask_output (SAM-HQ: 1, its best), else 1
    scores: np.ndarray  # float32 [M], the model's predicted IoU of each mask
    low_res_logits: np.ndarray  # float32 [M, L, L] (L = 256 for official SAM), usable as mask_input


class BatchPrediction(NamedTuple):
    """predict_batch's result: N prompt sets, each as predict would answer it alone."""

    masks: np.ndarray | None  # bool [N, M, H, W]; None with upscale=False
    scores: np.ndarray  # float32 [N, M]
    low_res_logits: np.ndarray  # float32 [N, M, L, L]


class _Image(NamedTuple):
    features: dict[str, np.ndarray]  # the encoder's outputs by name; the last the embedding [1, C, h, w]
    hw: tuple[int, int]  # the original image's (H, W), which prompts refer to


class Session(Closable):
    """Run a samedge bundle.

    >>> session = Session("bundles/demo-cpu")
    >>> session.set_image("photo.jpg")
    >>> masks, scores, logits = session.predict(points=[[120, 80]], labels=[1])
    >>> many = session.predict_batch(boxes=[[10, 10, 90, 90], [40, 20, 200, 120]])  # masks [2, 3, H, W]

    A Session may be shared by threads: the image set by `set_image` (or passed to
    `predict`) belongs to the calling thread, so each thread predicts on its own image,
    and the backends' sessions are safe to run concurrently. An image set in one thread
    is not seen by another: call set_image in the thread that predicts.

    `close()` (or the end of `with Session(...) as session:`) releases the backend's models
    and device memory; a closed Session refuses further use.
    """

    def __init__(self, source, backend: str | Backend = "auto", providers=None, device: str = "cpu",
                 low_memory: bool = False, verify: bool = True):
        """`backend`: a registered name (runtime.backends.registry.choices()), or a backend object
        (runtime.backends.base.Backend, e.g. an OnnxRuntimeBackend), which then belongs to the Session:
        closing the Session closes it.
        auto: TensorRT engines where built and tensorrt is installed, else on the CPU the engine measured
        faster for this kind of bundle (OpenVINO or ONNX Runtime; runtime/backends/choice.py); the pick
        and its reason are `backend_choice`.
        `providers`, `device` and `low_memory` configure a backend opened by name. `low_memory`: ONNX
        Runtime returns activation memory after each run instead of keeping it for the next (for small
        devices, or many sessions in one process); ONNX Runtime's only (auto then opens it).
        `verify`: check the bundle's files (and TensorRT engines) against the SHA-256 hashes recorded
        for them (docs/benchmarks/session-open.md has the cost); False skips that. The manifest's seal
        and the files' provenance (which model each ONNX file comes from) are checked either way."""
        # A Triton server's samedge model (grpc://host:8001/samedge) or a bundle here.
        self.bundle = remote_bundle(source) if is_remote(source) else open_bundle(source, verify=False)
        if isinstance(backend, str):
            # What auto picked and why (runtime.backends.choice), or the name asked for.
            self.backend_choice = registry.resolve(self.bundle, backend, providers, low_memory)
            options = BackendOptions(None if providers is None else tuple(providers), device, low_memory)
            self.backend = _open_backend(self.bundle, self.backend_choice, options, verify)
        else:
            self.backend_choice = Choice(getattr(backend, "name", type(backend).__name__), "a backend object given")
            _check_backend_object(backend, providers, device, low_memory)
            if verify:
                self.bundle.verify()
            _check_img_size(self.bundle, backend)  # refused, the object is still the caller's to close
            self.backend = backend
        self.abilities = abilities(self.backend)
        _warn_failed_parity(self.bundle)
        self.img_size = self.backend.img_size
        # The decoder upscales the embedding grid 4x (256 x 256 for official SAM).
        self.low_res_size = 4 * self.backend.embedding_size
        # The family's resize rule and prompt layout (runtime/geometry.py, runtime/prompts.py), from the manifest.
        self.geometry = geometry(self.bundle.resize)
        self._prompt_layout = dict(geometry=self.geometry, layout=self.bundle.prompt_layout)
        self._thread = threading.local()  # .image: this thread's _Image

    def _release(self) -> None:
        self._thread = threading.local()  # drops this thread's embedding; other threads' go with the old local
        self.backend.close()

    def set_image(self, image) -> None:
        """Encode an image (path, PIL image or uint8 array; greyscale/RGBA/16-bit converted)."""
        self._ensure_open()
        self._thread.image = self._encode(load_image(image))

    def _encode(self, rgb: np.ndarray) -> _Image:
        if self.abilities.takes_resized_image:
            pixels = self.geometry.resized(rgb, self.img_size)
        else:
            pixels = self.geometry.pixels(rgb, self.img_size, self.bundle.pixel_mean, self.bundle.pixel_std)
        return _Image(self.backend.encode(pixels), rgb.shape[:2])

    def _current(self) -> _Image:
        self._ensure_open()
        image = getattr(self._thread, "image", None)
        if image is None:
            raise RuntimeError("no image set in this thread: call set_image(image) first (in the thread that "
                               "predicts), or pass image= to predict")
        return image

    @contextmanager
    def keeping_image(self):
        """Inside the block this thread may encode other images (set_image, predict(image=...));
        on leaving it, the thread's current image is the one it had before (or none again)."""
        kept = getattr(self._thread, "image", None)
        try:
            yield self
        finally:
            self._thread.image = kept

    @property
    def image_embedding(self) -> np.ndarray:
        """The embedding of this thread's current image, [1, C, h, w]."""
        return self.image_features[self.bundle.features[-1]]

    @property
    def image_features(self) -> dict[str, np.ndarray]:
        """Every encoder output of this thread's current image, by name (SAM 2: two high-res levels too)."""
        features = self._current().features
        fetch = getattr(self.backend, "fetch_features", None)  # a server's model keeps them (triton backend)
        return dict(fetch(features) if fetch else features)

    def upscale(self, low_res: np.ndarray, image_hw) -> np.ndarray:
        """[B, M, L, L] low-res logits -> [B, M, H, W] logits for an H x W image, as the family's
        upstream post-processing (runtime/geometry.py)."""
        return self.geometry.upscale(low_res, self.img_size, image_hw)

    def predict(self, image=None, points=None, labels=None, box=None, mask_input=None,
                multimask_output: bool = True) -> Prediction:
        """Masks for XY pixel `points` (labels 1 fg / 0 bg) and/or an XYXY `box`.

        With `image`, it is encoded and becomes this thread's current image."""
        current, prompt = self._prompted(image, lambda hw: prompt_inputs(
            hw, self.img_size, self.low_res_size, points, labels, box, mask_input, **self._prompt_layout))
        if self.bundle.official_decoder:  # SAM 1: the official decoder upscales in its graph
            chosen = _chosen_masks(multimask_output)
            logits, scores, low_res = self.backend.decode({**current.features, **prompt})
            logits, scores, low_res = logits[0, chosen], scores[0, chosen], low_res[0, chosen]
        else:  # the batch decoder with one prompt set (SAM 2, SAM-HQ), upscaled as its family's upstream does
            del prompt["orig_im_size"]
            scores, low_res = (answer[0] for answer in self._chosen(*self._decode_batch(current, prompt),
                                                                     multimask_output))
            logits = self.upscale(low_res[None], current.hw)[0]
        return Prediction(
            masks=logits > MASK_THRESHOLD,
            scores=scores.astype(np.float32),
            low_res_logits=low_res.astype(np.float32),
        )

    def _prompted(self, image, check_prompts) -> tuple[_Image, dict]:
        """This call's image (`image` encoded and made current, else the thread's current one) and
        `check_prompts(image_hw)`, checked before the (costly) encoder runs on a new image."""
        self._ensure_open()
        rgb = None if image is None else load_image(image)
        prompts = check_prompts(rgb.shape[:2] if rgb is not None else self._current().hw)
        if rgb is not None:
            self._thread.image = self._encode(rgb)
        return self._current(), prompts  # this call's image: another thread's set_image cannot swap it

    def predict_batch(self, image=None, points=None, labels=None, boxes=None, mask_input=None,
                      multimask_output: bool = True, upscale: bool = True) -> BatchPrediction:
        """N prompt sets on one image: `points` [N, P, 2] with `labels` [N, P], and/or `boxes` [N, 4],
        `mask_input` [N, 1, L, L] (one low-res logit map per set). Each set is answered as `predict`
        answers it alone (prompts of one call share their layout: P points, a box or none).

        `upscale=False` skips the image-size masks (64 of them for a 12 MP photo are 768 MB):
        low_res_logits and scores only; runtime.masks.upscale_masks makes any of them full size."""
        current, prompts = self._prompted(image, lambda hw: batch_prompt_inputs(
            hw, self.img_size, self.low_res_size, points, labels, boxes, mask_input, **self._prompt_layout))
        count = len(prompts["has_mask_input"])
        step = min(PROMPTS_PER_CALL, self.abilities.max_prompts or PROMPTS_PER_CALL)
        answers = [self._decode_batch(current, {name: value[start:start + step] for name, value in prompts.items()})
                   for start in range(0, count, step)]
        scores, low_res = self._chosen(np.concatenate([a[0] for a in answers]),
                                       np.concatenate([a[1] for a in answers]), multimask_output)
        scores, low_res = scores.astype(np.float32), low_res.astype(np.float32)
        masks = None
        if upscale:
            # One prompt set at a time: the float logits at image size are 4x the booleans kept.
            masks = np.stack([self.upscale(one[None], current.hw)[0] > MASK_THRESHOLD for one in low_res])
        return BatchPrediction(masks, scores, low_res)

    def _chosen(self, scores: np.ndarray, low_res: np.ndarray, multimask_output: bool):
        """Of the batch decoder's four answers per prompt set (scores [n, 4], low_res [n, 4, L, L]), those
        predict gives: mask 0, or masks 1..3; or, where the family's predictor answers multimask with the
        best-scored of those alone (the manifest's decoder.multimask "best": SAM-HQ), that one."""
        if multimask_output and self.bundle.multimask == "best":
            best = 1 + np.argmax(scores[:, 1:], axis=1)  # the first of equal scores, as torch.max on a CPU
            rows = np.arange(len(best))
            return scores[rows, best][:, None], low_res[rows, best][:, None]
        chosen = _chosen_masks(multimask_output)
        return scores[:, chosen], low_res[:, chosen]

    def _decode_batch(self, image: _Image, prompts: dict) -> tuple[np.ndarray, np.ndarray]:
        """iou_predictions [n, 4] and low_res_masks [n, 4, L, L] for up to PROMPTS_PER_CALL sets."""
        if self.abilities.batch_decoding == "missing":
            required_batch_decoder(None)  # refused, with the fix
        if self.abilities.batch_decoding == "native":
            scores, low_res = self.backend.decode_batch({**image.features, **prompts})
            clamp = self.bundle.logit_clamp  # SAM 2's image predictor clamps; its decoder graph does not
            return scores, (low_res if clamp is None else np.clip(low_res, -clamp, clamp))
        # A backend without a batch decoder (SAM 1's torch reference, a user's object): one call per set.
        answers = [self.backend.decode({**image.features,
                                        **{name: value[n:n + 1] for name, value in prompts.items()},
                                        "orig_im_size": np.array(image.hw, np.float32)})
                   for n in range(len(prompts["has_mask_input"]))]
        return np.concatenate([a[1] for a in answers]), np.concatenate([a[2] for a in answers])


class ParityWarning(UserWarning):
    """The bundle failed its parity check against the checkpoint when it was built."""


_WARNED_PARITY: set[str] = set()  # bundles warned of in this process, once each


def _warn_failed_parity(bundle) -> None:
    """A bundle whose build's parity check failed still opens (a user may accept looser answers),
    but never in silence: one warning per bundle and process, naming the failed rows."""
    sections = [("", bundle.manifest.get("parity"))]
    sections.append(("tensorrt: ", (bundle.manifest.get("tensorrt") or {}).get("parity")))
    failed = [section for _, section in sections if isinstance(section, dict) and section.get("passed") is False]
    key = bundle.url or str(bundle.root.resolve())
    if not failed or key in _WARNED_PARITY:
        return
    _WARNED_PARITY.add(key)
    rows = [prefix + row for prefix, section in sections if isinstance(section, dict)
            for row in section.get("failed", [])]
    shown = "; ".join(rows[:6]) + (f"; and {len(rows) - 6} more" if len(rows) > 6 else "") if rows else "see the report"
    warnings.warn(f"{bundle.root} failed its parity check when it was built ({shown}): its answers differ from "
                  f"the checkpoint's beyond the thresholds. See {bundle.root}/parity.json; rebuild it, or re-check it "
                  "with python -m runtime.parity", ParityWarning, stacklevel=3)


def _chosen_masks(multimask_output: bool) -> slice:
    # Mask 0 is SAM's single-mask answer, masks 1..3 the multimask ones.
    return slice(1, None) if multimask_output else slice(0, 1)


def _open_backend(bundle, choice: Choice, options: BackendOptions, verify: bool) -> Backend:
    """The chosen backend for `bundle`, its files' hashes checked meanwhile when `verify`."""
    # Hashing (hashlib) and loading the models (the backend) both release the GIL:
    # done side by side, the check costs little more than the longer of the two.
    backend_class = registry.backend_class(choice.name)
    with ThreadPoolExecutor(1) as pool:
        verified = pool.submit(backend_class.verify_files if verify else lambda bundle: None, bundle)
        try:
            backend = registry.open_backend(bundle, choice, options)
        except Exception:
            verified.result()  # a file that fails its hash explains the failure best
            raise
        try:
            verified.result()  # refused before any use
            _check_img_size(bundle, backend)
        except Exception:
            backend.close()
            raise
    return backend


def _check_img_size(bundle, backend) -> None:
    if bundle.img_size is not None and backend.img_size != bundle.img_size:
        raise BundleError(f"the {backend.name} model takes {backend.img_size} px images but the manifest of "
                          f"{bundle.root} says {bundle.img_size}: they do not belong together; rebuild the bundle "
                          "with python -m export.build")


def _check_backend_object(backend, providers, device: str, low_memory: bool) -> None:
    if not isinstance(backend, Backend):
        raise TypeError(f"backend must be one of {registry.choices()} or a backend object with name, img_size, "
                        "embedding_size, encode, decode and close (runtime.backends.base.Backend); got "
                        f"{type(backend).__name__}")
    if providers is not None or device != "cpu" or low_memory:
        raise ValueError("providers, device and low_memory configure a backend Session opens by name; "
                         "give them to the backend object's constructor instead")
