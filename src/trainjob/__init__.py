"""trainjob: train an image classifier on your own data, locally, in Docker or on Azure ML."""

__version__ = "0.1.0"  # the package's; version.code_version() names the exact code (a commit or the image's build)
