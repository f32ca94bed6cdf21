"""A job's options: one dataclass the command builds and checks once, then prints and saves with its results."""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import PurePath


class Options:
    @classmethod
    def of(cls, values: dict):
        """Built by name from a command's parameters (its ``locals()``): each field takes the value of the same name."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    def to_dict(self) -> dict:
        """JSON-ready (paths as text, tuples as lists): saved as ``"options"`` with the results."""
        return {k: str(v) if isinstance(v, PurePath) else list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def rows(self) -> list[tuple[str, str]]:
        return [(k, "-" if v is None else str(v)) for k, v in self.to_dict().items()]
