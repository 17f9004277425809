"""Read CIFAR-10 python batches without letting the pickle run code.

pickle.load runs whatever callable the file names. A CIFAR batch needs only numpy's array reconstruction (and, for
protocol-2 files written by python 3, _codecs.encode to rebuild bytes), so every other global is refused.
"""

import codecs
import importlib
import pickle
from typing import BinaryIO

from trainjob.errors import DataError

# (module, name) as written in the pickle -> (numpy submodule, attribute) we hand back; both numpy 1 and 2 spellings.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
}
# Errors a malformed (truncated, garbled) pickle raises while loading; our own refusals are DataError and pass through.
_MALFORMED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
              OverflowError, UnicodeDecodeError)


def _numpy_attr(submodule: str, name: str):
    for package in ("numpy._core", "numpy.core"):  # numpy >= 2 first: numpy.core warns there
        try:
            return getattr(importlib.import_module(f"{package}.{submodule}"), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy has no {submodule}.{name}")


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """_codecs.encode limited to what pickle protocol 2 uses for bytes: latin-1 text back to the original bytes."""
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r}, expected latin1")
    return codecs.encode(text, "latin1", errors)


class CifarUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, name: str):
        # encoding="bytes": the original batches are python 2 pickles whose str become bytes (keys b"data", ...).
        super().__init__(file, encoding="bytes")
        self.name = name

    def find_class(self, module: str, name: str):
        import numpy as np

        if (module, name) in _NUMPY_GLOBALS:
            return _numpy_attr(*_NUMPY_GLOBALS[module, name])
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise DataError(f"refusing to load {self.name}: it asks to run {module}.{name}, which a CIFAR batch never "
                        "contains; the file is not a genuine CIFAR-10 batch (possibly malicious): replace it with the "
                        "original from https://www.cs.toronto.edu/~kriz/cifar.html")


def load_cifar_pickle(file: BinaryIO, name: str) -> object:
    """Unpickle one batch file (name is what the user sees in messages); DataError when refused or malformed."""
    try:
        return CifarUnpickler(file, name).load()
    except _MALFORMED as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"cannot read {name}: {detail}; expected a pickled CIFAR-10 batch (a dict with 'data' and "
                        "'labels'); the file is truncated or corrupt: copy or download it again") from e
