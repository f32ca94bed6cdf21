"""hiera-video: run, evaluate, finetune and pretrain Hiera on video."""

import importlib.util as _util
import os as _os
import sys as _sys

# cli/ and configs/ sit at the top of the repository (a layout requirement) and are this
# package's hiera_video.cli and hiera_video.configs: pyproject.toml's package-dir maps them for
# every install, wheel or editable. A checkout imported without an install (`python -m
# hiera_video.cli.app` from the repository root) gets exactly these two names here.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
for _name in ("cli", "configs"):
    _init = _os.path.join(_root, _name, "__init__.py")
    if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isfile(_init) and _util.find_spec(f"{__name__}.{_name}") is None:
        _spec = _util.spec_from_file_location(f"{__name__}.{_name}", _init, submodule_search_locations=[_os.path.dirname(_init)])
        _sys.modules[_spec.name] = globals()[_name] = _util.module_from_spec(_spec)
        _spec.loader.exec_module(_sys.modules[_spec.name])

from hiera_video.errors import HieraVideoError  # noqa: E402
from hiera_video.models import create_model, list_models  # noqa: E402

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "HieraVideoError", "__version__"]
