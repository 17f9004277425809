"""Read CIFAR-10 python batches without letting the pickle run code, crash the interpreter or exhaust memory.

pickle.load runs whatever callable the file names. A CIFAR batch needs only numpy's array reconstruction (and, for
protocol-2 files written by python 3, _codecs.encode to rebuild bytes), so every other global is refused. Refusing
globals is not enough: a 345-byte pickle can nest a tuple 200,000 deep (hashing it overflows the C stack: SIGSEGV)
or declare a 307 TB array in 176 bytes. So the file's opcodes are first scanned without building anything
(pickletools.genops), on a model of the unpickler's stack that tracks how deep each value nests, and a file with
opcodes a batch never uses, too many opcodes, too deep a value or a huge integer is refused; then every array the
file asks numpy to make may hold at most as many bytes as the file itself.
"""

import codecs
import importlib
import io
import math
import pickle
import pickletools
from typing import BinaryIO

from trainjob.errors import DataError
from trainjob.watchdog import beat

# (module, name) as written in the pickle -> (numpy submodule, attribute) we hand back; both numpy 1 and 2 spellings.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
}
# Errors a malformed (truncated, garbled) pickle raises while loading; our own refusals are DataError and pass through.
_MALFORMED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
              OverflowError, UnicodeDecodeError, RecursionError, MemoryError)

MAX_OPCODES = 5_000_000  # an original batch has ~60,000 (10,000 labels and file names)
MAX_DEPTH = 32  # containers inside containers; a batch needs 5 (dict, list, array arguments)
MAX_INT_BITS = 64  # labels and array shapes fit in 64 bits; a 5,000-digit integer is no pixel count

# Opcodes that push one value that holds nothing (depth 0).
_ATOMS = {"NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT",
          "BINFLOAT", "STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "UNICODE",
          "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "BYTEARRAY8", "GLOBAL"}
_EMPTY = {"EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT"}
_FROM_MARK = {"TUPLE", "LIST", "DICT"}  # build one container from everything above the last mark
_TUPLE_N = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_NOTHING = {"PROTO", "FRAME", "STOP"}


def scan(data: bytes, name: str) -> None:
    """Refuse, without building anything, a pickle a CIFAR batch cannot be (see the module docstring)."""
    model = _StackModel(name)
    try:
        for count, (op, arg, _) in enumerate(pickletools.genops(io.BytesIO(data)), start=1):
            if count > MAX_OPCODES:
                model.refuse(f"it has more than {MAX_OPCODES} opcodes")
            if not (model.build(op.name, arg) or model.move(op.name, arg)) and op.name not in _NOTHING:
                model.refuse(f"it uses the pickle opcode {op.name}")
    except (IndexError, KeyError) as e:
        raise pickle.UnpicklingError(f"malformed pickle ({type(e).__name__} at scan)") from None


class _StackModel:
    """The unpickler's stack with, instead of each value, how deep it nests."""

    def __init__(self, name: str):
        self.name = name
        self.stack: list[int] = []
        self.marks: list[int] = []
        self.memo: dict[int, int] = {}

    def refuse(self, why: str):
        raise DataError(f"refusing to load {self.name}: {why}; a genuine CIFAR-10 batch never does this: replace the "
                        "file with the original from https://www.cs.toronto.edu/~kriz/cifar.html")

    def push(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.refuse(f"it nests values more than {MAX_DEPTH} deep")
        self.stack.append(depth)

    def above_mark(self) -> list[int]:
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def build(self, kind: str, arg) -> bool:
        """Opcodes that make a value or fill a container; False for any other."""
        stack = self.stack
        if kind in _ATOMS:
            if isinstance(arg, int) and not isinstance(arg, bool) and arg.bit_length() > MAX_INT_BITS:
                self.refuse(f"it holds a {arg.bit_length()}-bit integer")
            self.push(0)
        elif kind in _EMPTY:
            self.push(1)
        elif kind in _FROM_MARK:
            self.push(1 + max(self.above_mark(), default=0))
        elif kind in _TUPLE_N:
            items = [stack.pop() for _ in range(_TUPLE_N[kind])]
            self.push(1 + max(items))
        elif kind == "APPEND":
            value = stack.pop()
            stack[-1] = max(stack[-1], 1 + value)
            self.push(stack.pop())
        elif kind in ("APPENDS", "SETITEMS"):
            items = self.above_mark()
            self.push(max(stack.pop(), 1 + max(items, default=0)))
        elif kind == "SETITEM":
            value, key = stack.pop(), stack.pop()
            self.push(max(stack.pop(), 1 + max(key, value)))
        elif kind in ("REDUCE", "NEWOBJ", "BUILD"):  # callable or object, then its arguments or state
            arguments = stack.pop()
            self.push(max(stack.pop(), 1 + arguments))
        elif kind == "STACK_GLOBAL":
            stack.pop(), stack.pop()
            self.push(0)
        else:
            return False
        return True

    def move(self, kind: str, arg) -> bool:
        """Opcodes that mark, memoise, copy or drop values; False for any other."""
        if kind == "MARK":
            self.marks.append(len(self.stack))
        elif kind in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[arg] = self.stack[-1]
        elif kind == "MEMOIZE":
            self.memo[len(self.memo)] = self.stack[-1]
        elif kind in ("GET", "BINGET", "LONG_BINGET"):
            self.push(self.memo[arg])
        elif kind == "POP":
            self.stack.pop()
        elif kind == "POP_MARK":
            self.above_mark()
        elif kind == "DUP":
            self.push(self.stack[-1])
        else:
            return False
        return True


def _check_array(shape, dtype, strides, budget: int, name: str) -> None:
    """Refuse an array the file cannot hold: more bytes than the file itself, or zero strides (a view that repeats a
    few bytes into terabytes)."""
    import numpy as np

    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    if any(not isinstance(n, int) or n < 0 for n in dims) or (strides is not None and 0 in tuple(strides)):
        raise DataError(f"refusing to load {name}: it declares an array of shape {dims} with strides {strides}; "
                        "the file is not a genuine CIFAR-10 batch: replace it with the original")
    declared = math.prod(dims) * np.dtype(dtype).itemsize
    if declared > budget:
        raise DataError(f"refusing to load {name}: it declares a {declared:,}-byte array in a {budget:,}-byte file; "
                        "the file is not a genuine CIFAR-10 batch: replace it with the original")


def _plain_dtype(name: str):
    """numpy.dtype, but never one that holds Python objects: an object array is a list of references whose size
    the file need not contain (and no CIFAR batch has one)."""
    import numpy as np

    def dtype(*args, **kwargs):
        made = np.dtype(*args, **kwargs)
        if made.hasobject:
            raise DataError(f"refusing to load {name}: it declares an array of Python objects; a CIFAR-10 batch holds "
                            "uint8 pixels: replace the file with the original")
        return made

    return dtype


def _sized_reconstruct(real, budget: int, name: str):
    import numpy as np

    def reconstruct(subtype, shape, dtype):
        _check_array(shape, dtype, None, budget, name)
        # the file names numpy.ndarray as the type to make, which find_class answered with the checked subclass
        return real(np.ndarray if isinstance(subtype, type) and issubclass(subtype, np.ndarray) else subtype,
                    shape, dtype)

    return reconstruct


def _sized_ndarray(budget: int, name: str):
    """numpy.ndarray as the file may call it: its constructor checks the array first, and it is still a type, for
    _reconstruct(numpy.ndarray, ...)."""
    import numpy as np

    class CheckedNdarray(np.ndarray):
        def __new__(cls, shape, dtype=float, buffer=None, offset=0, strides=None, order=None):
            _check_array(shape, dtype, strides, budget, name)
            return np.ndarray(shape, dtype, buffer, offset, strides, order)

    return CheckedNdarray


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
    def __init__(self, file: BinaryIO, name: str, budget: int):
        # encoding="bytes": the original batches are python 2 pickles whose str become bytes (keys b"data", ...).
        super().__init__(file, encoding="bytes")
        self.name = name
        self.budget = budget  # the most bytes any one array may declare: the size of the file it comes from

    def find_class(self, module: str, name: str):

        if (module, name) in _NUMPY_GLOBALS:
            found = _numpy_attr(*_NUMPY_GLOBALS[module, name])
            return _sized_reconstruct(found, self.budget, self.name) if name == "_reconstruct" else found
        if module == "numpy" and name == "ndarray":
            return _sized_ndarray(self.budget, self.name)
        if module == "numpy" and name == "dtype":
            return _plain_dtype(self.name)
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise DataError(f"refusing to load {self.name}: it asks to run {module}.{name}, which a CIFAR batch never "
                        "contains; the file is not a genuine CIFAR-10 batch (possibly malicious): replace it with the "
                        "original from https://www.cs.toronto.edu/~kriz/cifar.html")


def load_cifar_pickle(file: BinaryIO, name: str) -> object:
    """Unpickle one batch file (name is what the user sees in messages); DataError when refused or malformed."""
    beat(f"reading {name}")
    try:
        data = file.read()
        scan(data, name)
        return CifarUnpickler(io.BytesIO(data), name, budget=len(data)).load()
    except _MALFORMED as e:
        detail = " ".join(str(e).split()) or type(e).__name__
        raise DataError(f"cannot read {name}: {detail}; expected a pickled CIFAR-10 batch (a dict with 'data' and "
                        "'labels'); the file is truncated or corrupt: copy or download it again") from e
