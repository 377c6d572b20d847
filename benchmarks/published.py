"""Figures published by others, kept apart from ours and never computed here.

Transcribed from the project's reference notes (/work/shared/reference/slimsam.md,
birkhoff.md, tensorrt.md), which cite the papers and repositories named in `source`.
Their hardware, data and metrics differ from ours; the results page prints them in a
table of their own.
"""

from __future__ import annotations

from .report import table

# (work, model, figure, value, conditions, source)
PUBLISHED = [
    ("SlimSAM", "SAM-B", "params / MACs / mIoU", "93M / 372G / 73.37 %",
     "SA-1B, one point per mask", "SlimSAM paper, arXiv 2312.05284"),
    ("SlimSAM", "SlimSAM-50", "params / MACs / mIoU", "26M / 98G / 72.33 %",
     "trained on 10k SA-1B images (0.1 %), 40 + 80 epochs, one Titan RTX", "SlimSAM paper, arXiv 2312.05284"),
    ("SlimSAM", "SlimSAM-77", "params / MACs / mIoU", "9.1M / 23G / 67.40 %",
     "same training as SlimSAM-50", "SlimSAM paper, arXiv 2312.05284"),
    ("Birkhoff", "SAM-B", "size / ratio / time", "357.0 MB -> 82.8 MB / 4.31x / 15.8 s",
     "data-free, one GPU", "Juntongkuki/Birkhoff-Model-Compression (arXiv 2409.00592, 2507.08765)"),
    ("Birkhoff", "SAM-B", "mIoU before -> after", "COCO 54.03 -> 51.65, SA-1B 77.95 -> 75.35",
     "ground-truth prompts", "Juntongkuki/Birkhoff-Model-Compression"),
    ("Birkhoff", "SAM family (18 models)", "ratio", "3.33x (MobileSAM) to 5.17x (SAM2-B)",
     "SAM-L 4.68x in 41.7 s, SAM-H 4.75x in 95.3 s", "Juntongkuki/Birkhoff-Model-Compression"),
    ("Birkhoff", "SAM-B / SAM-H", "HyperLinear inference vs dense", "+24 % / +4 % time",
     "Triton kernel, GPU", "Juntongkuki/Birkhoff-Model-Compression"),
    ("nanosam", "ResNet18 encoder + MobileSAM decoder", "latency", "encoder 4.2 ms, full 8.1 ms",
     "Jetson AGX Orin, TensorRT", "NVIDIA-AI-IOT/nanosam"),
    ("nanosam", "nanosam vs MobileSAM", "latency, full pipeline", "27 ms vs 146 ms",
     "Jetson Orin Nano, TensorRT", "NVIDIA-AI-IOT/nanosam"),
    ("nanosam", "nanosam vs MobileSAM", "mIoU", "0.706 vs 0.728", "COCO val2017, ground-truth boxes",
     "NVIDIA-AI-IOT/nanosam"),
    ("EfficientViT-SAM", "L0", "latency / throughput", "8.2 ms / 762 img/s",
     "TensorRT fp16, Jetson AGX Orin / A100 batch 16, data transfer included", "mit-han-lab/efficientvit"),
    ("EfficientViT-SAM", "XL1", "latency / throughput", "37.2 ms / 182 img/s",
     "TensorRT fp16, Jetson AGX Orin / A100 batch 16", "mit-han-lab/efficientvit"),
]


def published_table() -> str:
    return table(["work", "model", "figure", "their value", "their conditions", "source"],
                 [list(row) for row in PUBLISHED])
