"""SAM 2.1 on the CPU: hiera-t and hiera-b+ on torch, ONNX Runtime and OpenVINO, and their bundles' sizes.

    python -m benchmarks.run sam2 [--models sam2.1_hiera_t sam2.1_hiera_b+] [--repeats 3] [--fresh]
    python -m benchmarks.run sam2 --from-json docs/benchmarks/sam2.json   # the text again, nothing measured

Per model type (seeded weights, compress.seeded_checkpoint; built on first use and cached in
.cache/benchmarks/<model type>/ as the results page's bundles are, rebuilt when export's
GRAPH_REVISION changes, or with --fresh): the dense bundle, its Birkhoff bundle (recipe "birkhoff", reference
variant) and its int8 quantisation (export.quantize), all with the project's own entry points.
Speed: upstream's SAM2ImagePredictor on the checkpoint (torch CPU, the family's reference), and
runtime.Session on the dense bundle with ONNX Runtime (CPU provider) and with OpenVINO, open at
once in one process and timed interleaved (benchmarks.latency.interleaved, one warm-up call each),
so every ratio to torch comes from the same minutes. Encoder: set_image on the astronaut photo
(512 x 512, stretched to the model's size as sam2 does); decoder: predict with one foreground point
at the photo's centre (three masks, upscaled to the photo). Peak RSS: a fresh process per row that
opens the model, sets the image and predicts one point (benchmarks/peak_memory.py's child for the
Sessions; this module's for torch); OpenVINO compiling (its model cache off) and from its cache;
"imports" is the same process without the model. Sizes: every file of each bundle against the
checkpoint torch loads (fp32 safetensors); the ONNX files with the weights they read (weights.bin);
Birkhoff's compressed checkpoint (model.birkhoff.safetensors), the file the Birkhoff paper's ratio
is taken on. Writes docs/benchmarks/sam2.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import json
import os
import re
import shutil
import statistics
import sys
from importlib import metadata
from pathlib import Path

from skimage import data

from .report import CACHE, DOCS, Page, fmt, proc_field, table

PAGE = DOCS / "sam2.md"
MODELS = ("sam2.1_hiera_t", "sam2.1_hiera_b+")
ORIGINAL, BIRKHOFF, INT8 = "original", "birkhoff-reference", "int8"  # benchmarks.variants' names
SIZE_VARIANTS = (ORIGINAL, BIRKHOFF, INT8)
LABELS = {ORIGINAL: "dense", BIRKHOFF: "Birkhoff", INT8: "int8"}
ENGINES = {"torch": "torch CPU (SAM2ImagePredictor)", "onnxruntime": "Session, ONNX Runtime",
           "openvino": "Session, OpenVINO"}
PEAKS = {"torch": "torch CPU (SAM2ImagePredictor)", "onnxruntime": "Session, ONNX Runtime",
         "openvino compiling": "Session, OpenVINO (compiling)", "openvino cached": "Session, OpenVINO (cached)"}
PHOTO = "astronaut"
# The Birkhoff paper's SAM2-B: 308.0 MB -> 58.9 MB, original checkpoint bytes over compressed safetensors
# bytes (benchmarks/published.py; /work/shared/reference/birkhoff.md). SAM2-B is SAM 2's Hiera base+.
PUBLISHED_SAM2_B = 5.17
MB, GIB = 1e6, 2 ** 30


def add_arguments(parser) -> None:
    from compress.families.sam2 import MODEL_TYPES

    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=sorted(MODEL_TYPES),
                        help="SAM 2 model types, seeded (sam2.1_hiera_t_256: a smoke run of about a minute)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds after one warm-up")
    parser.add_argument("--decoder-calls", type=int, default=3, help="predict calls per engine and round")
    parser.add_argument("--fresh", action="store_true",
                        help="rebuild the models' bundles (and seeded checkpoints) instead of reusing the cache: "
                             "after a change to the SAM 2 export that did not raise GRAPH_REVISION")
    parser.add_argument("--from-json", type=Path, metavar="JSON",
                        help="render the page again from the measurements a run saved (its .json), measuring "
                             "nothing: for when only what the page says of them changed")
    parser.add_argument("--work", type=Path, default=CACHE, help=argparse.SUPPRESS)  # the bundle cache (tests)
    parser.add_argument("--page", type=Path, default=PAGE, help=argparse.SUPPRESS)  # where the page goes (tests)


# ---- bundles and sizes ----------------------------------------------------------------------------

def _no_slimsam():
    raise ValueError("no variant of the sam2 and zoo pages distils (SlimSAM for SAM 2 has its own page: slimsam2)")


def _source(model_type: str, work: Path):
    from compress import seeded_checkpoint

    from .variants import ModelSource

    # A partial, not a lambda: the source travels pickled to the build's child process (benchmarks/variants.py).
    return ModelSource(model_type, functools.partial(seeded_checkpoint, model_type, work / model_type), _no_slimsam,
                       _no_slimsam, slim_tag="none")


def _build(model_type: str, work: Path) -> tuple[dict, dict]:
    """({variant: Built}, {variant: why it was not built}): a quantisation that fails is said, not fatal."""
    from .variants import build_variant, in_build_order

    source, built, failed = _source(model_type, work), {}, {}
    for variant in in_build_order(SIZE_VARIANTS):
        try:
            built[variant] = build_variant(variant, source, work, built)
        except Exception as err:  # noqa: BLE001 - export.quantize raising: the row says why
            if variant != INT8:
                raise
            failed[variant] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            print(f"warning: {model_type} {variant} not built ({failed[variant]})", file=sys.stderr)
    return built, failed


def _bundle_sizes(bundle: Path) -> dict:
    from compress.families.sam2 import TRACKING_TENSORS

    files = [path for path in bundle.rglob("*") if path.is_file()]
    # The tracking constants are the runtime's (float32, 4 MB at 1024 px), not a checkpoint.
    model_files = [path for path in files if path.suffix in (".onnx", ".bin", ".data") or path.name == TRACKING_TENSORS]
    checkpoints = [path for path in files if path.suffix == ".safetensors" and path.name != TRACKING_TENSORS]
    return {"bundle_bytes": sum(path.stat().st_size for path in files),
            "model_files_bytes": sum(path.stat().st_size for path in model_files),
            "checkpoint_inside_bytes": sum(path.stat().st_size for path in checkpoints) or None}


def _sizes(built: dict, failed: dict) -> dict:
    sizes = {variant: {"not_built": why} for variant, why in failed.items()}
    for variant, result in built.items():
        sizes[variant] = {**_bundle_sizes(result.bundle), "built_at": result.built_at,
                          "build_seconds": result.build_seconds}
        compression = result.manifest.get("compression")
        if compression:
            sizes[variant]["compression"] = {key: compression.get(key) for key in
                                             ("method", "variant", "source_bytes", "compressed_bytes", "seconds")}
    return sizes


# ---- latency (one process, interleaved) ----------------------------------------------------------

@contextlib.contextmanager
def _environment(name: str, value: str):
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def _engines(checkpoint: Path, bundle: Path, ov_cache: Path) -> dict:
    """{engine: an object with set_image(rgb) and predict(points=, labels=)}, each as a user opens it
    (benchmarks/zoo.py takes these for every family)."""
    from compress import load_checkpoint
    from compress.families import family_of
    from runtime import Session
    from runtime.backends.openvino_backend import CACHE_VARIABLE

    model = load_checkpoint(checkpoint)
    engines = {"torch": family_of(model.config).reference(model)}  # its family's upstream predictor
    engines["onnxruntime"] = Session(bundle, backend="onnxruntime", providers=["CPUExecutionProvider"])
    with _environment(CACHE_VARIABLE, str(ov_cache)):  # fills the cache the "cached" peak opens from
        engines["openvino"] = Session(bundle, backend="openvino")
    return engines


def _latency(checkpoint: Path, bundle: Path, image, repeats: int, decoder_calls: int, ov_cache: Path) -> dict:
    """{engine: {'encoder_s', 'decoder_s' (medians), their runs, 'logits_diff' (max |low-res logits -
    torch's|, same prompt)}}."""
    import numpy as np

    from .latency import interleaved

    point = {"points": [[image.shape[1] / 2, image.shape[0] / 2]], "labels": [1]}
    engines = _engines(checkpoint, bundle, ov_cache)
    try:
        calls = {}
        for name, engine in engines.items():
            calls[name, "encoder", 0] = lambda engine=engine: engine.set_image(image)
            for index in range(decoder_calls):  # after its engine's encoder in every round (the stride)
                calls[name, "decoder", index] = lambda engine=engine: engine.predict(**point)
        runs = interleaved(calls, repeats, warmup=1, stride=1 + decoder_calls, desc="latency")
        logits = {name: np.asarray(engine.predict(**point)[2], np.float64) for name, engine in engines.items()}
    finally:
        for engine in engines.values():
            if hasattr(engine, "close"):
                engine.close()
        del engines
        gc.collect()
    results = {}
    for name in ENGINES:
        encoder = runs[name, "encoder", 0]
        decoder = [t for index in range(decoder_calls) for t in runs[name, "decoder", index]]
        results[name] = {"encoder_s": statistics.median(encoder), "decoder_s": statistics.median(decoder),
                         "encoder_runs": encoder, "decoder_runs": decoder,
                         "logits_diff": float(np.abs(logits[name] - logits["torch"]).max())}
    return results


# ---- peak memory (a fresh process per figure) ----------------------------------------------------

def torch_child(checkpoint: Path | None, photo: str) -> int:
    """In this process: the checkpoint into SAM2ImagePredictor, set_image, one point (None: imports only)."""
    from compress import load_checkpoint
    from compress.families import get_family

    importlib.import_module("sam2.sam2_image_predictor")  # what reference() imports: in the floor too
    image = getattr(data, photo)()
    if checkpoint is not None:
        predictor = get_family("sam2").reference(load_checkpoint(checkpoint))
        predictor.set_image(image)
        predictor.predict(points=[[image.shape[1] / 2, image.shape[0] / 2]], labels=[1])
    return _peak_bytes()


def _peak_bytes() -> int:
    peak = proc_field("/proc/self/status", "VmHWM")  # as benchmarks.peak_memory.peak_bytes
    if peak is not None:
        return int(peak.split()[0]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _torch_peak(checkpoint: Path | None) -> int:
    from . import peak_memory

    arguments = ["--torch-child", "--photo", PHOTO] + (["--floor"] if checkpoint is None else [str(checkpoint)])
    return peak_memory.in_fresh_process("benchmarks.sam2", arguments)["peak_rss_bytes"]


def _floors() -> dict:
    from . import peak_memory

    return {"torch": _torch_peak(None), **{name: peak_memory.measure(None, name, PHOTO)
                                           for name in ("onnxruntime", "openvino")}}


def _peaks(checkpoint: Path, bundle: Path, ov_cache: Path) -> dict:
    from runtime.backends.openvino_backend import CACHE_VARIABLE

    from . import peak_memory

    return {"torch": _torch_peak(checkpoint),
            "onnxruntime": peak_memory.measure(bundle, "onnxruntime", PHOTO),
            "openvino compiling": peak_memory.measure(bundle, "openvino", PHOTO, env={CACHE_VARIABLE: "off"}),
            "openvino cached": peak_memory.measure(bundle, "openvino", PHOTO, env={CACHE_VARIABLE: str(ov_cache)})}


# ---- the page -------------------------------------------------------------------------------------

def measure(args) -> Page:
    if args.from_json:
        return _page(json.loads(args.from_json.read_text()), args.page, measured=_measured_line(args.page))
    if args.repeats < 1 or args.decoder_calls < 1:
        raise ValueError("--repeats and --decoder-calls must be at least 1")
    image = getattr(data, PHOTO)()
    ov_cache = args.work / "sam2-openvino-cache"
    results = {"settings": {"repeats": args.repeats, "decoder_calls": args.decoder_calls, "photo": PHOTO,
                            "photo_hw": list(image.shape[:2]), "sam2": _version("sam2"),
                            "torch_threads": _torch_threads(), "birkhoff_settings": _birkhoff_settings()},
               "floors": _floors(), "models": {}}
    for model_type in args.models:
        if args.fresh:
            shutil.rmtree(args.work / model_type, ignore_errors=True)
        built, failed = _build(model_type, args.work)
        dense = built[ORIGINAL]
        manifest = dense.manifest
        row = results["models"][model_type] = {
            "img_size": manifest["preprocessing"]["img_size"], "parameters": manifest["model"]["parameters"],
            "checkpoint_bytes": dense.checkpoint.stat().st_size, "sizes": _sizes(built, failed)}
        row["latency"] = _latency(dense.checkpoint, dense.bundle, image, args.repeats, args.decoder_calls, ov_cache)
        row["peaks"] = _peaks(dense.checkpoint, dense.bundle, ov_cache)
    return _page(results, args.page)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _birkhoff_settings() -> dict:
    """The codec's settings the "birkhoff" recipe codes with (its defaults: the authors' configuration)."""
    import dataclasses

    from compress.birkhoff.codec import Settings

    return dataclasses.asdict(Settings())


def _settings_text(settings: dict | None) -> str:
    if not settings:
        return "samedge's default settings"
    return (f"L {settings['side']}, U {' or '.join(map(str, settings['codebook_sizes']))}, K_max "
            f"{settings['max_rings']}, target MAE {settings['target_mae']}")


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _measured_line(page: Path) -> str:
    """The header line of the run that measured the page (kept when the page is rendered again)."""
    found = re.search(r"^(Measured .*?)(?: Rendered again .*)?$", page.read_text(), re.M) if page.is_file() else None
    if found is None:
        raise ValueError(f"{page} has no 'Measured ...' header line to keep; measure the page instead")
    return found.group(1)


def _ratio(value, base, spec: str = ".2f") -> str:
    """value / base as "1.23x"; "-" where either is missing."""
    return "-" if value is None or not base else format(value / base, spec) + "x"


def _size_rows(model_type: str, row: dict) -> list[list]:
    checkpoint = row["checkpoint_bytes"]
    rows = [[model_type, "checkpoint (fp32 safetensors)", fmt(checkpoint / MB, ".1f"), "1.00x", "-", "-", "-", "-"]]
    for variant in SIZE_VARIANTS:
        size = row["sizes"].get(variant, {"not_built": "not in this run"})
        if "not_built" in size:
            rows.append([model_type, LABELS[variant], f"not built: {size['not_built'].replace('|', '/')}",
                         "-", "-", "-", "-", "-"])
            continue
        inside = size["checkpoint_inside_bytes"] if variant == BIRKHOFF else None
        rows.append([model_type, LABELS[variant], fmt(size["bundle_bytes"] / MB, ".1f"),
                     _ratio(checkpoint, size["bundle_bytes"]), fmt(size["model_files_bytes"] / MB, ".1f"),
                     _ratio(checkpoint, size["model_files_bytes"]),
                     fmt(None if inside is None else inside / MB, ".1f"), _ratio(checkpoint, inside)])
    return rows


def _latency_rows(model_type: str, row: dict) -> list[list]:
    base = row["latency"]["torch"]
    rows = []
    for engine, label in ENGINES.items():
        result = row["latency"][engine]
        rows.append([model_type, label, fmt(result["encoder_s"], ".3f"), _ratio(result["encoder_s"], base["encoder_s"]),
                     fmt(1e3 * result["decoder_s"], ".1f"), _ratio(result["decoder_s"], base["decoder_s"]),
                     "reference" if engine == "torch" else fmt(result["logits_diff"], ".1e")])
    return rows


def _memory_rows(model_type: str, row: dict, floors: dict) -> list[list]:
    base = row["peaks"]["torch"]
    rows = []
    for key, label in PEAKS.items():
        peak, floor = row["peaks"][key], floors[key.split()[0]]
        rows.append([model_type, label, fmt(floor / GIB, ".2f"), fmt(peak / GIB, ".2f"),
                     fmt((peak - floor) / GIB, ".2f"), _ratio(peak, base)])
    return rows


def _findings(results: dict) -> list[str]:
    """What the figures show, one line each: ratios to torch and the Birkhoff ratio against the paper's."""
    lines = []
    for model_type, row in results["models"].items():
        latency, peaks = row["latency"], row["peaks"]
        torch_encoder, torch_decoder = latency["torch"]["encoder_s"], latency["torch"]["decoder_s"]
        speed = "; ".join(f"{ENGINES[e].removeprefix('Session, ')} {_ratio(latency[e]['encoder_s'], torch_encoder)} "
                          f"of torch's encoder time and {_ratio(latency[e]['decoder_s'], torch_decoder)} of its "
                          f"decoder time" for e in ("onnxruntime", "openvino"))
        memory = "; ".join(f"{PEAKS[k].removeprefix('Session, ')} {_ratio(peaks[k], peaks['torch'])}"
                           for k in ("onnxruntime", "openvino compiling", "openvino cached"))
        lines.append(f"- {model_type} ({row['img_size']} px): {speed}. Peak RSS against torch's: {memory}.")
        birkhoff, settings = row["sizes"].get(BIRKHOFF, {}), results["settings"].get("birkhoff_settings")
        if "compression" in birkhoff:
            compressed = birkhoff["checkpoint_inside_bytes"]
            ours = row["checkpoint_bytes"] / compressed
            comparable = ("the same architecture: SAM2-B is SAM 2's Hiera base+" if "hiera_b+" in model_type
                          else "not the paper's model: SAM2-B is SAM 2's Hiera base+")
            lines.append(
                f"- {model_type}, Birkhoff ({birkhoff['compression']['variant']} variant, {_settings_text(settings)}; "
                f"seeded weights): checkpoint {row['checkpoint_bytes'] / MB:.1f} MB -> compressed checkpoint "
                f"{compressed / MB:.1f} MB, {ours:.2f}x, against the Birkhoff paper's {PUBLISHED_SAM2_B:.2f}x for "
                f"SAM2-B on trained weights ({comparable}); its bundle's ONNX files and weights: "
                f"{_ratio(row['checkpoint_bytes'], birkhoff['model_files_bytes'])}, the whole bundle (the compressed "
                f"checkpoint inside): {_ratio(row['checkpoint_bytes'], birkhoff['bundle_bytes'])}.")
        int8 = row["sizes"].get(INT8, {})
        if "not_built" in int8:
            lines.append(f"- {model_type}, int8: export.quantize did not build it ({int8['not_built']}).")
        elif int8:
            lines.append(f"- {model_type}, int8: ONNX files and weights "
                         f"{_ratio(row['checkpoint_bytes'], int8['model_files_bytes'])} smaller than the checkpoint.")
    return lines


def _page(results: dict, path: Path, measured: str | None = None) -> Page:
    settings = results["settings"]
    size_rows, latency_rows, memory_rows = [], [], []
    for model_type, row in results["models"].items():
        size_rows += _size_rows(model_type, row)
        latency_rows += _latency_rows(model_type, row)
        memory_rows += _memory_rows(model_type, row, results["floors"])
    intro = (__doc__.split("\n\n", 2)[2].replace("\n", " ").strip()
             + f" This run: {settings['repeats']} timed rounds, {settings['decoder_calls']} predict calls per engine "
               f"and round; sam2 {settings['sam2']}, torch with {settings['torch_threads']} threads.")
    body = ("## What the figures show\n\n" + "\n".join(_findings(results))
            + "\n\n## Latency (median seconds; ratio to torch, same run; logits diff: max |low-res logits - torch's|)"
              "\n\n" + table(["model", "engine", "encoder (s)", "encoder / torch", "decoder (ms)", "decoder / torch",
                              "logits diff"], latency_rows)
            + "\n\n## Peak RSS (GiB, a fresh process each; imports: the same process without the model)\n\n"
            + table(["model", "engine", "imports", "peak", "peak - imports", "peak / torch's"], memory_rows)
            + "\n\n## Sizes on disk (MB; ratios: the checkpoint's bytes over each)\n\n"
            + table(["model", "what", "whole bundle", "checkpoint / bundle", "ONNX files + weights",
                     "checkpoint / those", "compressed checkpoint", "checkpoint / it"], size_rows))
    return Page(path, "SAM 2.1 on the CPU: torch, ONNX Runtime and OpenVINO; bundle sizes", intro, body, data=results,
                measured=measured)


def main(argv=None) -> int:
    """The torch child: `python -m benchmarks.sam2 --torch-child (CHECKPOINT | --floor) [--photo NAME]`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--torch-child", action="store_true", required=True)
    parser.add_argument("checkpoint", nargs="?", type=Path)
    parser.add_argument("--photo", default=PHOTO)
    parser.add_argument("--floor", action="store_true", help="imports and photo only, no model")
    args = parser.parse_args(argv)
    if (args.checkpoint is None) != args.floor:
        parser.error("give a CHECKPOINT or --floor")
    print(json.dumps({"peak_rss_bytes": torch_child(args.checkpoint, args.photo)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
