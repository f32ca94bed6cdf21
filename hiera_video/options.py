"""A job's options: one dataclass the command builds and checks once, then prints and saves with its results."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import PurePath


class Options:
    def to_dict(self) -> dict:
        """JSON-ready (paths as text, tuples as lists): saved as ``"options"`` with the results."""
        return {k: str(v) if isinstance(v, PurePath) else list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def rows(self) -> list[tuple[str, str]]:
        return [(k, "-" if v is None else str(v)) for k, v in self.to_dict().items()]
