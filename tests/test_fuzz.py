"""Fuzzing the two parsers that read what users hand over: the CIFAR batch unpickler and the image decoder.

Whatever the bytes, each either gives a well-formed result or raises the one error type the CLI turns into a
one-line exit 2 (DataError, UnreadableImage): never another exception, never a crash, never a huge allocation.
"""

import io
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from trainjob import preprocess
from trainjob.data import cifar
from trainjob.data.safe_pickle import load_cifar_pickle
from trainjob.errors import DataError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=True)  # the same inputs on every run: a failure here is reproducible


def _batch_bytes() -> bytes:
    rng = np.random.default_rng(0)
    batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3],
             "batch_label": "fuzz", "filenames": ["a.png", "b.png", "c.png", "d.png"]}
    return pickle.dumps(batch, protocol=2)


VALID_BATCH = _batch_bytes()


def _mutated(base: bytes):
    """base with a few bytes overwritten, inserted or cut, anywhere."""
    edits = st.lists(st.tuples(st.sampled_from(["set", "insert", "cut"]), st.integers(0, len(base) - 1),
                               st.binary(min_size=1, max_size=8)), min_size=1, max_size=4)

    def apply(changes):
        data = bytearray(base)
        for kind, at, payload in changes:
            at = min(at, len(data) - 1)
            if kind == "set":
                data[at:at + len(payload)] = payload
            elif kind == "insert":
                data[at:at] = payload
            else:
                del data[at:at + len(payload)]
        return bytes(data)

    return edits.map(apply)


def _parse(data: bytes) -> None:
    try:
        obj = load_cifar_pickle(io.BytesIO(data), "fuzz")
        cifar.parse_batch(obj, "fuzz", 10, "the CIFAR-10 names")
    except DataError as e:
        assert "\n" not in str(e)


@FUZZ
@given(st.binary(max_size=512))
def test_the_batch_reader_takes_any_bytes(data):
    _parse(data)


@FUZZ
@given(_mutated(VALID_BATCH))
def test_the_batch_reader_takes_any_damage_to_a_real_batch(data):
    _parse(data)


def _image_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"])
def test_the_image_decoder_takes_any_damage_to_a_real_image(tmp_path, fmt):
    base = _image_bytes(fmt)

    @FUZZ
    @given(_mutated(base))
    def decode_damaged(data):
        path = tmp_path / f"x.{fmt.lower()}"
        path.write_bytes(data)
        try:
            out = preprocess.decode_file(str(path), 16)
        except preprocess.UnreadableImage:
            return
        assert out.shape == (3, 16, 16) and out.dtype == np.uint8

    decode_damaged()


@FUZZ
@given(st.binary(max_size=256))
def test_the_image_decoder_takes_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "x.jpg"
    path.write_bytes(data)
    try:
        preprocess.decode_file(str(path), 16)
    except preprocess.UnreadableImage:
        pass
