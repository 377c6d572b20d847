"""Which model an ONNX file was exported from, read from the file itself.

export.build writes into every ONNX file of a bundle (ModelProto.metadata_props) the digest
of the model's weights it was exported from, and the pre-processing it expects. A file
copied in from another bundle, or another model's decoder of the same architecture, then
carries another digest, whatever the manifest's hashes say or whether they are checked
(`verify=False`), and a lone encoder.onnx knows its own pixel statistics.

The reader scans the file's top-level protobuf fields and skips the graph without reading
it: onnx.load would parse the whole graph (vit_h's encoder.onnx: 2.5 GB inline weights) to
read three short strings, on every Session start.
"""

from __future__ import annotations

import json
from pathlib import Path

MODEL_DIGEST = "samedge.model_digest"  # SHA-256 of the exported model's weights (export/provenance.py)
PREPROCESSING = "samedge.preprocessing"  # JSON: img_size, pixel_mean, pixel_std

_METADATA_PROPS = 14  # ModelProto.metadata_props (onnx.proto): repeated StringStringEntryProto {key = 1, value = 2}
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class _Truncated(ValueError):
    pass


def _varint(read) -> int:
    value, shift = 0, 0
    while True:
        byte = read(1)
        if not byte:
            raise _Truncated("the file ends inside a number")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("a number longer than 10 bytes")


def _entries(buffer: bytes) -> dict[str, str]:
    """A StringStringEntryProto's key and value."""
    position, fields = 0, {}

    def read(count: int) -> bytes:
        nonlocal position
        chunk = buffer[position:position + count]
        position += len(chunk)
        return chunk

    while position < len(buffer):
        tag = _varint(read)
        if tag & 7 != _LENGTH_DELIMITED:
            raise ValueError("a metadata entry holds a field that is not a string")
        fields[tag >> 3] = read(_varint(read)).decode("utf-8")
    return {fields.get(1, ""): fields.get(2, "")}


def read_metadata(path) -> dict[str, str]:
    """The ONNX file's metadata_props; ValueError (UnicodeDecodeError included) where it is not a
    readable ONNX protobuf."""
    metadata = {}
    with open(path, "rb") as f:
        size = Path(path).stat().st_size
        while f.tell() < size:
            tag = _varint(f.read)
            kind, number = tag & 7, tag >> 3
            if kind == _VARINT:
                _varint(f.read)
            elif kind in (_FIXED64, _FIXED32):
                f.seek(8 if kind == _FIXED64 else 4, 1)
            elif kind == _LENGTH_DELIMITED:
                length = _varint(f.read)
                if f.tell() + length > size:
                    raise _Truncated(f"a field of {length} bytes runs past the end of the file")
                if number == _METADATA_PROPS:
                    metadata.update(_entries(f.read(length)))
                else:
                    f.seek(length, 1)  # the graph, opsets, functions: not read
            else:
                raise ValueError(f"protobuf wire type {kind} is not ONNX's")
    return metadata


def model_digest(metadata: dict[str, str]) -> str | None:
    """The digest of the model a file was exported from (its `read_metadata`); None where it has none."""
    return metadata.get(MODEL_DIGEST)


def preprocessing(metadata: dict[str, str]) -> dict | None:
    """{img_size, pixel_mean, pixel_std} an encoder was exported for; None where it does not say."""
    text = metadata.get(PREPROCESSING)
    return None if text is None else json.loads(text)
