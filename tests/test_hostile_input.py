"""The bad-input corpus, through the whole CLI: every case is exit 2, one line naming the problem, no traceback,
failure.txt, and the outputs and checkpoints of an earlier run left byte for byte as they were.

Runs `trainjob.cli.run` in this process (the same code `train` runs) so thirty cases cost seconds, not minutes.
Policy for files among images: unreadable ones are skipped and counted in summary.json; a class left with no
readable image fails (see docs/data.md, "Bad data").
"""

import errno
import os
import pickle
import resource
import tarfile
from pathlib import Path

import numpy as np
import pytest
from cli_runner import assert_one_error_line
from datagen import (
    ShellPayload,
    png_claiming_size,
    rewrite_batch,
    write_cifar_batches,
    write_cifar_tar,
    write_image_folders,
    write_tar_members,
)

from trainjob import atomic, cli

EARLIER = {"model.pt": b"earlier model", "summary.json": b'{"test_accuracy": 0.5}',
           "checkpoints/latest.pt": b"earlier checkpoint"}


def _cifar(tmp: Path, **fields) -> Path:
    batches = write_cifar_batches(tmp / "data", n_train=40, n_test=10)
    if fields:
        rewrite_batch(batches / "data_batch_1", **fields)
    return tmp / "data"


def _folders(tmp: Path, spoil=None) -> Path:
    data = write_image_folders(tmp / "data", per_class_train=4, per_class_test=2)
    if spoil:
        spoil(data)
    return data


def _empty_class(data: Path, reason: str) -> None:
    for f in (data / "train" / "dog").iterdir():
        f.unlink()
    target = data / "train" / "dog"
    if reason == "zero-byte":
        (target / "a.png").write_bytes(b"")
    elif reason == "not-image":
        (target / "a.jpg").write_text("plain text, not a JPEG")
    elif reason == "symlink-loop":
        os.symlink("b.png", target / "a.png")
        os.symlink("a.png", target / "b.png")
    elif reason == "bomb":
        (target / "a.png").write_bytes(png_claiming_size(40_000, 40_000))  # 4.8 GB once decoded


def _non_utf8_class(data: Path) -> None:
    bad = os.fsencode(data / "train") + b"/caf\xe9"
    os.mkdir(bad)
    (Path(os.fsdecode(bad)) / "x.png").write_bytes(b"")
    os.mkdir(os.fsencode(data / "test") + b"/caf\xe9")
    (Path(os.fsdecode(os.fsencode(data / "test") + b"/caf\xe9")) / "y.png").write_bytes(b"")


def _truncate(batch: Path) -> None:
    batch.write_bytes(batch.read_bytes()[:500])


class _Reduces:
    """Pickles as a call of func(*args): how a hostile batch asks numpy for an array."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _raw_batch(tmp: Path, payload: bytes) -> Path:
    """CIFAR batches whose data_batch_1 is exactly payload (a pickle written by hand)."""
    data = _cifar(tmp)
    (data / "cifar-10-batches-py" / "data_batch_1").write_bytes(payload)
    return data


def _tar_with_long_name(tmp: Path) -> Path:
    """A tar.gz of about 1 MB whose first header is a GNU long name of 1 GiB (tarfile reads it whole)."""
    import gzip

    (tmp / "data").mkdir()
    header = tarfile.TarInfo("././@LongLink")
    header.type, header.size = tarfile.GNUTYPE_LONGNAME, 1 << 30
    with gzip.open(tmp / "data" / "cifar-10-python.tar.gz", "wb", compresslevel=1) as f:
        f.write(header.tobuf(format=tarfile.GNU_FORMAT))
        block = b"a" * (1 << 20)
        for _ in range(1 << 10):
            f.write(block)
    return tmp / "data"


_DEEP_TREES: list[Path] = []


@pytest.fixture(autouse=True)
def _remove_deep_trees():
    """shutil.rmtree recurses once per level: pytest's own clean-up of an old tmp_path holding a tree 1,100 deep
    would stop every later pytest session with a RecursionError. Remove such trees here, bottom up."""
    yield
    while _DEEP_TREES:
        chain, folder = [], _DEEP_TREES.pop()
        while (folder / "d").is_dir():
            folder = folder / "d"
            chain.append(folder)
        for level in reversed(chain):
            level.rmdir()


def _deep_empty_class(data: Path) -> None:
    for f in (data / "train" / "dog").iterdir():
        f.unlink()
    folder = data / "train" / "dog"
    _DEEP_TREES.append(folder)
    for _ in range(1100):  # past Python's recursion limit (which os.makedirs itself would hit)
        folder = folder / "d"
        folder.mkdir()


def _many_label_names(tmp: Path) -> Path:
    data = _cifar(tmp)
    meta = data / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(200_000)]}, protocol=2))
    return data


def _control_characters_in_a_class_name(data: Path) -> None:
    os.rename(data / "test" / "dog", data / "test" / "do\ng\x1b[31m")  # a newline and a terminal colour escape


CASES = {
    "missing path": (lambda t: t / "nowhere", [], "does not exist"),
    "path is a file": (lambda t: (t / "f.txt").write_text("x") and t / "f.txt", [], "is a file"),
    "empty folder": (lambda t: (t / "data").mkdir() or t / "data", [], "is empty"),
    "unknown layout": (lambda t: (t / "data").mkdir() or (t / "data" / "notes.txt").write_text("x") and t / "data",
                       [], "expected"),
    "truncated pickle": (lambda t: (_truncate(_cifar(t) / "cifar-10-batches-py" / "data_batch_2"), t / "data")[1],
                         [], "truncated or corrupt"),
    "wrong shape": (lambda t: _cifar(t, data=np.zeros((8, 100), np.uint8)), [], "expected (N, 3072)"),
    "wrong dtype": (lambda t: _cifar(t, data=np.zeros((8, 3072), np.float32)), [], "expected a uint8 array"),
    "label out of range": (lambda t: _cifar(t, labels=[42] * 8), [], "out of range"),
    "count mismatch": (lambda t: _cifar(t, labels=[0] * 3), [], "expected one label per image"),
    "corrupt tar.gz": (lambda t: (t / "data").mkdir() or (t / "data" / "cifar-10-python.tar.gz").write_bytes(
        b"\x1f\x8b" + os.urandom(300)) and t / "data", [], "cannot read"),
    "tar path traversal": (lambda t: (t / "data").mkdir() or write_tar_members(
        t / "data" / "cifar-10-python.tar.gz", {"cifar-10-batches-py/../../../etc/evil": b"x"}).parent, [],
        "points outside the archive"),
    "class of zero-byte files": (lambda t: _folders(t, lambda d: _empty_class(d, "zero-byte")), [],
                                 "has no readable image"),
    "class of non-images": (lambda t: _folders(t, lambda d: _empty_class(d, "not-image")), [],
                            "has no readable image"),
    "class of symlink loops": (lambda t: _folders(t, lambda d: _empty_class(d, "symlink-loop")), [],
                               "has no readable image"),
    "decompression bomb": (lambda t: _folders(t, lambda d: _empty_class(d, "bomb")), [], "possible decompression bomb"),
    "non-UTF-8 class name": (lambda t: _folders(t, _non_utf8_class), [], "caf\\xe9"),
    "control characters in a class name": (lambda t: _folders(t, _control_characters_in_a_class_name), [],
                                           "'do\\\\ng\\\\x1b[31m'"),
    "single class": (lambda t: (write_image_folders(t / "data", classes=("only",), split=None), t / "data")[1], [],
                     "class"),
    "tuple nested 200,000 deep as a key": (lambda t: _raw_batch(t, b"\x80\x02}" + b")" + b"\x85" * 200_000
                                                                + b"K\x01s."), [], "nests values more than 32 deep"),
    "list nested 100,000 deep": (lambda t: _raw_batch(t, b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."), [],
                                 "nests values more than 32 deep"),
    "5,000-digit integer key": (lambda t: _raw_batch(t, pickle.dumps({10 ** 5000: 1}, protocol=2)), [],
                                "-bit integer"),
    "array with zero strides": (lambda t: _cifar(t, data=_Reduces(np.ndarray, ((10 ** 7, 10 ** 7), np.dtype("u1"),
                                                                                b"x", 0, (0, 0)))), [],
                                "with strides (0, 0)"),
    "array declared without its bytes": (lambda t: _cifar(t, data=_Reduces(np.ndarray, ((10 ** 12,), np.dtype("u1"))
                                                                            )), [], "1,000,000,000,000-byte array"),
    "array reconstructed without its bytes": (lambda t: _cifar(t, data=_Reduces(
        np._core.multiarray._reconstruct, (np.ndarray, (10 ** 12,), b"B"))), [], "1,000,000,000,000-byte array"),
    "array of Python objects": (lambda t: _cifar(t, data=np.array([[1, 2]] * 8, dtype=object)), [],
                                "an array of Python objects"),
    "tar.gz with a 1 GiB long name": (_tar_with_long_name, [], "unpacks to more than 256 MB"),
    "pickle opcode a batch never uses": (lambda t: _raw_batch(t, b"\x80\x02\x8f."), [],
                                         "the pickle opcode EMPTY_SET"),
    "a class of 1,100 nested empty folders": (lambda t: _folders(t, _deep_empty_class), [], "has no readable image"),
    "200,000 label names": (_many_label_names, [], "more than the 1000 classes"),
    "negative learning rate": (lambda t: _cifar(t), ["--learning_rate", "-0.1"], "--learning_rate must be"),
    "NaN learning rate": (lambda t: _cifar(t), ["--learning_rate", "nan"], "--learning_rate must be"),
    "batch size 0": (lambda t: _cifar(t), ["--batch_size", "0"], "--batch_size must be at least 1"),
    "momentum 1.5": (lambda t: _cifar(t), ["--momentum", "1.5"], "--momentum must be in [0, 1)"),
    "val fraction 2": (lambda t: _cifar(t), ["--val_fraction", "2"], "--val_fraction must be"),
    "unknown flag": (lambda t: _cifar(t), ["--learnin_rate", "0.1"], "unrecognized arguments"),
    "resume from a missing file": (lambda t: _cifar(t), ["--resume", "/no/such.pt"], "no such checkpoint file"),
    "model from another recipe": (lambda t: _cifar(t), ["--model", "fastnet"], "does not go with --recipe tutorial"),
    "cuda on a CPU machine": (lambda t: _cifar(t), ["--device", "cuda"], "no CUDA GPU is visible"),
    "seed 2**64": (lambda t: _cifar(t), ["--seed", str(2**64)], "--seed must be a whole number from 0"),
    "negative seed": (lambda t: _cifar(t), ["--seed", "-1"], "--seed must be a whole number from 0"),
    "unknown backbone": (lambda t: _folders(t), ["--recipe", "transfer", "--backbone", "vgg11"],
                         "unknown --backbone 'vgg11'"),
    "weights that are not weights": (lambda t: (t / "w.pth").write_text("not a weights file") and _folders(t),
                                     ["--recipe", "transfer", "--weights", "{tmp}/w.pth"], "expected 579344248a93e230"),
    "weights sha256 not hex": (lambda t: _folders(t), ["--recipe", "transfer", "--weights_sha256", "xyz"],
                               "--weights_sha256 must be hex digits"),
}


def _earlier_outputs(out: Path) -> None:
    for name, content in EARLIER.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(content)


def _run(argv, capsys) -> tuple[int, str]:
    code = cli.run([str(a) for a in argv])
    return code, capsys.readouterr().err


def _assert_one_line_exit_2(code: int, err: str, phrase: str, out: Path) -> str:
    line = assert_one_error_line(code, err, phrase)
    assert (out / "failure.txt").read_text().strip() == line
    return line


def test_the_corpus_is_at_least_forty_cases():
    assert len(CASES) >= 40


def _files_outside(tmp_path: Path, out: Path) -> set[str]:
    """Every path under tmp_path but the output folder (a stack: rglob recurses, and a case nests 1,100 deep)."""
    found, stack = set(), [str(tmp_path)]
    while stack:
        for entry in os.scandir(stack.pop()):
            if entry.path == str(out):
                continue
            found.add(entry.path)
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return found


# What one bad input may add to this process's peak RSS: the worst legitimate case (a 31 MB batch read, scanned and
# parsed) stays far below it; the bombs in the corpus would take gigabytes to terabytes.
RSS_BUDGET_MB = 600


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_earlier_results(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setenv("TRAINJOB_CACHE_DIR", "off")
    make_data, flags, phrase = CASES[name]
    data = make_data(tmp_path)
    flags = [flag.format(tmp=tmp_path) for flag in flags]  # "{tmp}": a file the case wrote
    out = tmp_path / "outputs"
    _earlier_outputs(out)
    before, peak_before = _files_outside(tmp_path, out), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, err = _run(["--data_path", data, "--output_dir", out, "--progress", "off", *flags], capsys)
    _assert_one_line_exit_2(code, err, phrase, out)
    for rel, content in EARLIER.items():
        assert (out / rel).read_bytes() == content, f"{rel} was changed"
    assert _files_outside(tmp_path, out) == before, "something was written outside the output folder"
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grew_mb < RSS_BUDGET_MB, f"peak RSS grew by {grew_mb:.0f} MB"


def test_a_pickle_payload_never_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRAINJOB_CACHE_DIR", "off")
    marker = tmp_path / "pwned"
    data = _cifar(tmp_path, data=ShellPayload(marker))
    out = tmp_path / "outputs"
    code, err = _run(["--data_path", data, "--output_dir", out], capsys)
    _assert_one_line_exit_2(code, err, "refusing to load", out)
    assert not marker.exists(), "the payload ran"


def test_a_payload_in_the_tar_gz_never_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRAINJOB_CACHE_DIR", "off")
    marker = tmp_path / "pwned"
    archive = write_cifar_tar(tmp_path / "data", n_train=40, n_test=10)
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    members["cifar-10-batches-py/data_batch_1"] = pickle.dumps({"data": ShellPayload(marker)}, protocol=2)
    write_tar_members(archive, members)
    out = tmp_path / "outputs"
    code, err = _run(["--data_path", archive.parent, "--output_dir", out], capsys)
    _assert_one_line_exit_2(code, err, "refusing to load", out)
    assert not marker.exists(), "the payload ran"


def test_full_disk_while_writing_results_keeps_the_earlier_ones(tmp_path, capsys, monkeypatch):
    """A full disk is simulated at the one place every result goes through: fsync of the temporary file."""
    monkeypatch.setenv("TRAINJOB_CACHE_DIR", "off")
    out = tmp_path / "outputs"
    _earlier_outputs(out)
    (out / "checkpoints" / "latest.pt").unlink()  # not a real checkpoint: let this run start afresh
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(out / ".model.pt")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    code, err = _run(["--data_path", _cifar(tmp_path), "--output_dir", out, "--epochs", "1", "--progress", "off"],
                     capsys)
    _assert_one_line_exit_2(code, err, "no space left on the device while writing", out)
    assert (out / "model.pt").read_bytes() == EARLIER["model.pt"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")], "a temporary file was left behind"


def test_a_symlinked_checkpoints_folder_is_refused_and_nothing_is_written_through_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRAINJOB_CACHE_DIR", "off")
    out, elsewhere = tmp_path / "outputs", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "checkpoints").symlink_to(elsewhere)
    code, err = _run(["--data_path", _cifar(tmp_path), "--output_dir", out, "--epochs", "1"], capsys)
    _assert_one_line_exit_2(code, err, "is a symlink", out)
    assert list(elsewhere.iterdir()) == []
