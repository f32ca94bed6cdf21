"""hiera-video: run, evaluate, finetune and pretrain Hiera on video."""

import os as _os

# In a source checkout, cli/ and configs/ sit beside this package (the installed package
# maps them to hiera_video.cli and hiera_video.configs). Make the same names work when the
# checkout itself is imported (e.g. `python -m hiera_video.cli.app` or a multiprocessing
# child started in the repository folder).
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "cli", "app.py")) and _os.path.isfile(_os.path.join(_root, "pyproject.toml")):
    __path__.append(_root)  # noqa: F821  (a package's __path__)

from hiera_video.errors import HieraVideoError  # noqa: E402
from hiera_video.models import create_model, list_models  # noqa: E402

__version__ = "0.1.0"
__all__ = ["create_model", "list_models", "HieraVideoError", "__version__"]
