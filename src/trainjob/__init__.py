"""trainjob: train an image classifier on your own data, locally, in Docker or on Azure ML."""

__version__ = "0.1.0"

from trainjob.version import code_version  # noqa: E402 - after __version__, which its fallback reads

__all__ = ["__version__", "code_version"]
