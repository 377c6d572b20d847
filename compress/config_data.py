"""What every model family's config shares: a frozen dataclass written as JSON into checkpoints and
manifests, and read back with no pickled code."""

from __future__ import annotations

import dataclasses


class ConfigData:
    """Mixin for a frozen dataclass of plain values (ints, floats, strings, tuples of them)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        """The config a dict holds; JSON's lists become the tuples the dataclass holds."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown architecture fields {unknown}: this file was written by a newer samedge; "
                             "upgrade samedge to read it")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in data.items()})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)
