"""The ``hiera-video`` command line (Typer). Installed as ``hiera_video.cli``."""
