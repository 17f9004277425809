"""Checkpoints and results on a file system that is not a POSIX disk: blob storage mounted with FUSE (blobfuse2,
Azure ML's rw_mount).

What blobfuse2 documents and its users report (docs/azure.md names the pages): a rename is a copy and a delete, not
atomic, and can fail with EIO, sometimes after it happened; a file not yet closed cannot be renamed; fsync and a
directory's fsync do something else than on a disk, and a FUSE file system may refuse either. No blob mount is
available here, so a stand-in refuses those calls the way such a mount answers them: os.replace raises EIO, and
os.fsync on a directory raises EINVAL. The stand-in is only that; what a real rw_mount does is listed as unverified in
docs/azure.md.
"""

import errno
import os
import stat
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import run_train, summary, weights

from trainjob import atomic
from trainjob.checkpoint import Checkpoints
from trainjob.errors import UserError

# The same stand-in for the trainer's own process: it patches os before trainjob runs, then runs `train`.
STANDIN = '''
import errno, os, stat, sys
_fsync = os.fsync


def fsync(fd):
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    return _fsync(fd)


def replace(src, dst, **kwargs):
    raise OSError(errno.EIO, os.strerror(errno.EIO), str(src), None, str(dst))


os.fsync, os.replace = fsync, replace
from trainjob.cli import main
main()
'''


def refuse_dir_fsync(fd: int, real=os.fsync):
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    return real(fd)


def refuse_rename(src, dst, **kwargs):
    raise OSError(errno.EIO, os.strerror(errno.EIO), str(src), None, str(dst))


@pytest.fixture
def blob_mount(monkeypatch):
    """Stand-in for a blobfuse2 mount: every rename fails with EIO, a directory's fsync with EINVAL."""
    monkeypatch.setattr(os, "fsync", refuse_dir_fsync)
    monkeypatch.setattr(os, "replace", refuse_rename)
    atomic._warned.clear()


def test_checkpoints_are_written_whole_and_the_previous_kept_where_renames_and_dir_fsyncs_are_refused(
        tmp_path, blob_mount, capsys):
    ckpt = Checkpoints(tmp_path / "mount")
    for step in (1, 2, 3):
        ckpt.save({"step": step, "weights": torch.full((64,), float(step))})
    state, path = ckpt.find("auto")
    assert (state["step"], path.name) == (3, "latest.pt") and torch.equal(state["weights"], torch.full((64,), 3.0))
    assert sorted(p.name for p in ckpt.dir.iterdir()) == ["latest.pt", "previous.pt"], "no temp file left behind"
    assert capsys.readouterr().out.count("rewritten in place") == 1, "said once per folder"
    # A crash while latest.pt is rewritten in place tears it: the previous one is taken instead.
    ckpt.latest.write_bytes(ckpt.latest.read_bytes()[:100])
    state, path = ckpt.find("auto")
    assert (state["step"], path.name) == (2, "previous.pt")


def test_a_rename_reported_failed_after_it_happened_is_taken_as_done(tmp_path, monkeypatch, capsys):
    """blobfuse2 has answered EIO for a rename it did carry out (Azure/azure-storage-fuse#964)."""
    real = os.replace

    def renamed_then_eio(src, dst, **kwargs):
        real(src, dst)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "replace", renamed_then_eio)
    atomic._warned.clear()
    atomic.write_json(tmp_path / "summary.json", {"a": 1})
    assert (tmp_path / "summary.json").read_text().startswith("{") and len(list(tmp_path.iterdir())) == 1
    assert "rewritten in place" not in capsys.readouterr().out


def test_errors_that_are_not_a_refusal_still_fail_the_write(tmp_path, monkeypatch):
    """Never a silent success: a failed upload (EIO from fsync of the file) or a full disk still stops the write,
    and the old file stays as it was."""
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def eio(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(OSError, match="Input/output error"):
        atomic.save_torch({"x": 1}, target)
    assert target.read_bytes() == b"old" and len(list(tmp_path.iterdir())) == 1

    def full(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", refuse_dir_fsync)
    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(UserError, match="no space left"):
        atomic.save_torch({"x": 1}, target)
    assert target.read_bytes() == b"old"


def test_a_run_on_the_stand_in_mount_checkpoints_and_a_new_node_resumes_from_it(tmp_path):
    """The trainer itself under the stand-in: the run finishes, its checkpoints and results are whole, and a second
    process with an empty output folder (a new node) resumes from --checkpoint_dir instead of training again."""
    wrapper = tmp_path / "standin_train.py"
    wrapper.write_text(STANDIN)
    checkpoints = tmp_path / "mount" / "trainjob-checkpoints"
    args = ["--demo", "--epochs", "1", "--progress", "off", "--log_interval", "500", "--num_threads", "1",
            "--checkpoint_dir", checkpoints]
    command = [sys.executable, str(wrapper)]
    first = run_train(*args, "--output_dir", tmp_path / "node1", command=command)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "rewritten in place" in first.stdout
    assert (checkpoints / "latest.pt").is_file()
    assert {p.name for p in checkpoints.iterdir()} <= {"latest.pt", "previous.pt"}
    second = run_train(*args, "--output_dir", tmp_path / "node2", command=command)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"resuming from {checkpoints}" in second.stdout
    assert summary(tmp_path / "node2")["test_accuracy"] == summary(tmp_path / "node1")["test_accuracy"]
    one, two = weights(tmp_path / "node1"), weights(tmp_path / "node2")
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not list(Path(tmp_path).rglob("*.tmp")), "no temp file left behind"
