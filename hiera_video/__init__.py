"""hiera-video: run, evaluate, finetune and pretrain Hiera on video."""

import importlib.util as _util
import os as _os
import sys as _sys

# cli/ and configs/ (top of the repository) are hiera_video.cli and .configs: pyproject.toml's package-dir maps
# them for an install; a checkout used without one (`python -m hiera_video.cli.app`) gets them here.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
for _name in ("cli", "configs"):
    _init = _os.path.join(_root, _name, "__init__.py")
    if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isfile(_init) and _util.find_spec(f"{__name__}.{_name}") is None:
        _spec = _util.spec_from_file_location(f"{__name__}.{_name}", _init, submodule_search_locations=[_os.path.dirname(_init)])
        _sys.modules[_spec.name] = globals()[_name] = _util.module_from_spec(_spec)
        _spec.loader.exec_module(_sys.modules[_spec.name])

from hiera_video.errors import HieraVideoError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "HieraVideoError", "__version__"]


def __getattr__(name):
    """``create_model`` and ``list_models`` on first use (importing the package imports no torch)."""
    if name in ("create_model", "list_models"):
        from hiera_video import models
        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
