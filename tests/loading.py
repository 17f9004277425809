"""Load a dataset folder the way the trainer does, collecting its log lines, for the data-layer tests."""

import pytest

from trainjob.data import load_dataset
from trainjob.errors import DataError


def load(path, **overrides):
    """(Dataset, log lines) for path (None: no --data_path); keyword arguments override load_dataset's (cache off
    by default)."""
    lines = []
    kwargs = {"image_size": 32, "val_fraction": 0.1, "seed": 0, "cache_dir": "off", "demo": False,
              "log": lines.append, **overrides}
    return load_dataset(None if path is None else str(path), **kwargs), lines


def load_error(path, **overrides) -> str:
    """The DataError message loading path raises; it must be one line."""
    with pytest.raises(DataError) as info:
        load(path, **overrides)
    message = str(info.value)
    assert "\n" not in message, "a user error is one line"
    return message
