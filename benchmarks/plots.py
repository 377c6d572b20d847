"""The results page's two PNGs: size against fidelity, and latency per variant and backend."""

from __future__ import annotations

from pathlib import Path

SIZE_VS_FIDELITY = "size-vs-fidelity.png"
LATENCY = "latency.png"


def _pyplot():
    # matplotlib (heavy, an extra) on first use; Agg (files only, no display) must be chosen before pyplot loads.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    _pyplot().close(fig)
    return out


def _fidelity_of(model: dict) -> tuple[str, str]:
    """(row key, axis label) of the model's main fidelity figure."""
    if "ground-truth" in model["fidelity"]:
        return "point_miou", "one-point mIoU vs ground truth"
    return "agreement_miou", "agreement mIoU with the original"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _plain_log_axis(ax) -> None:
    """Log x axis labelled 1, 2, 5, 10, 20, ... (the default 2x10^0 labels overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # on use, as in _pyplot

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def size_vs_fidelity(models: list[dict], out: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        key, label = _fidelity_of(model)
        for index, (variant, row) in enumerate(model["rows"].items()):
            value = 1.0 if row.get(key) == "reference" else row.get(key)
            if not (_number(value) and _number(row.get("onnx_bytes"))):
                continue  # not built, or not measured: the tables say why
            ax.scatter(row["onnx_bytes"] / 1e6, value)
            # Alternate label heights: neighbours (the two Birkhoff variants) would overprint.
            ax.annotate(variant, (row["onnx_bytes"] / 1e6, value), textcoords="offset points",
                        xytext=(4, 4 if index % 2 else -10), fontsize=8)
        _plain_log_axis(ax)
        ax.set_xlabel("encoder.onnx + decoder.onnx (MB, log scale)")
        ax.set_ylabel(label)
        ax.set_title(model["label"], fontsize=9)
        ax.grid(alpha=0.3)
    return _save(fig, out)


def latency_bars(models: list[dict], backends: list[str], out: Path) -> Path:
    """Encoder (top) and decoder (bottom) median latency, one bar per backend that ran."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(models), figsize=(7 * len(models), 7), squeeze=False)
    for column, model in enumerate(models):
        variants = [v for v, row in model["rows"].items() if "not_built" not in row]
        measured = [b for b in backends
                    if any(isinstance(model["rows"][v].get("latency", {}).get(b), dict) for v in variants)]
        width = 0.8 / max(len(measured), 1)
        for row_index, part in enumerate(("encoder", "decoder")):
            ax = axes[row_index][column]
            for index, backend in enumerate(measured):
                cells = [model["rows"][v]["latency"].get(backend) for v in variants]
                heights = [c[f"{part}_s"] * 1e3 if isinstance(c, dict) else 0.0 for c in cells]
                ax.bar([i + index * width for i in range(len(variants))], heights, width, label=backend)
            ax.set_xticks([i + width * (len(measured) - 1) / 2 for i in range(len(variants))])
            ax.set_xticklabels(variants, rotation=30, ha="right", fontsize=8)
            ax.set_ylabel(f"{part} median (ms)")
            ax.set_title(f"{model['label']}: {part}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if measured:
                ax.legend(fontsize=8)
    return _save(fig, out)


def write_plots(models: list[dict], backends: list[str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [size_vs_fidelity(models, folder / SIZE_VS_FIDELITY), latency_bars(models, backends, folder / LATENCY)]
