"""Preemption: SIGTERM or SIGKILL at any point, then the same command, ends exactly where an unstopped run ends."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cli_runner import REPO, assert_user_error, cli_env, run_train, summary, weights

from trainjob.checkpoint import check_compatible
from trainjob.config import parse_args
from trainjob.errors import UserError

# --demo: 5,000 generated images, so 2 epochs are 2,500 steps of batch 4: long enough to stop in the middle.
RUN = ["--demo", "--epochs", "2", "--log_interval", "50", "--progress", "off", "--num_threads", "1"]


def start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainjob", *RUN, "--output_dir", str(out), *extra], cwd=REPO,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc: subprocess.Popen, prefix: str) -> None:
    for line in proc.stdout:
        if line.startswith(prefix):
            return
    raise AssertionError(f"the run ended before printing {prefix!r}: {proc.stderr.read()[-2000:]}")


def outcome(out: Path) -> tuple[dict, list]:
    s = summary(out)
    return weights(out), [(h["train_loss"], h["test_accuracy"]) for h in s["history"]] + [s["test_accuracy"]]


@pytest.fixture(scope="module")
def unstopped(tmp_path_factory) -> tuple[dict, list]:
    out = tmp_path_factory.mktemp("unstopped")
    result = run_train(*RUN, "--output_dir", out)
    assert result.returncode == 0, result.stderr
    return outcome(out)


def assert_same(out: Path, unstopped) -> None:
    got_weights, got_metrics = outcome(out)
    want_weights, want_metrics = unstopped
    assert got_metrics == want_metrics
    assert all(torch.equal(got_weights[k], want_weights[k]) for k in want_weights)


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", ["[1,   100]", "epoch 1:", "[2,   600]"])
def test_sigterm_anywhere_then_same_command_gives_identical_result(tmp_path, unstopped, stop_after):
    out = tmp_path / "o"
    proc = start(out)
    wait_for_line(proc, stop_after)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    stop_seconds = time.monotonic() - sent
    assert proc.returncode == 143, stderr
    assert stop_seconds < 5, f"took {stop_seconds:.1f} s to stop; docker stop allows 10"
    failure = (out / "failure.txt").read_text()
    assert failure.startswith("stopped by SIGTERM; resumable from ") and "latest.pt" in failure
    assert not (out / "model.pt").exists()

    resumed = run_train(*RUN, "--output_dir", out)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    assert not (out / "failure.txt").exists()
    assert_same(out, unstopped)
    # metrics.jsonl reads as if the run had never stopped: no repeated or missing lines.
    lines = [line for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * (1250 // 50) + 2


@pytest.mark.slow
def test_sigkill_resumes_from_last_periodic_checkpoint_and_skips_a_corrupt_newest(tmp_path, unstopped):
    out = tmp_path / "o"
    proc = start(out, "--checkpoint_interval", "0.3")
    wait_for_line(proc, "[2,   300]")
    proc.kill()
    proc.communicate(timeout=60)
    checkpoints = out / "checkpoints"
    assert (checkpoints / "latest.pt").exists() and (checkpoints / "previous.pt").exists()
    # A torn newest checkpoint (as a full disk or a kill mid-copy leaves it) must fall back to the previous one.
    latest = checkpoints / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])

    resumed = run_train(*RUN, "--output_dir", out, "--checkpoint_interval", "0.3")
    assert resumed.returncode == 0, resumed.stderr
    assert "truncated, corrupt or from another trainjob version; trying the previous one" in resumed.stdout
    assert "resuming from" in resumed.stdout and "previous.pt" in resumed.stdout
    assert_same(out, unstopped)


def test_checkpoint_from_other_settings_is_refused_with_the_fix(tmp_path):
    out = tmp_path / "o"
    first = run_train("--demo", "--epochs", "1", "--output_dir", out, "--progress", "off", "--log_interval", "500")
    assert first.returncode == 0
    again = run_train("--demo", "--epochs", "1", "--output_dir", out, "--learning_rate", "0.01")
    assert again.returncode == 2
    assert "was made with --learning_rate 0.001 but this run has --learning_rate 0.01" in again.stderr
    assert "--resume never" in again.stderr
    fresh = run_train("--demo", "--epochs", "1", "--output_dir", out, "--learning_rate", "0.01", "--resume", "never",
                      "--progress", "off", "--log_interval", "500")
    assert fresh.returncode == 0, fresh.stderr


def test_checkpoint_from_before_width_resumes_at_the_width_it_was_trained_with(tmp_path):
    # A config as trainjob wrote it before --width existed: the fast recipe then always built width 48.
    config = parse_args(["--recipe", "fast", "--demo"], environ={}).to_dict()
    del config["width"]
    old = {"config": config, "classes": ["a", "b"]}
    current = parse_args(["--recipe", "fast", "--demo"], environ={}).to_dict()
    check_compatible(old, tmp_path / "latest.pt", current, ["a", "b"])  # the default width: resumes
    narrower = parse_args(["--recipe", "fast", "--demo", "--width", "32"], environ={}).to_dict()
    with pytest.raises(UserError, match="made with --width 48 but this run has --width 32"):
        check_compatible(old, tmp_path / "latest.pt", narrower, ["a", "b"])
    tutorial = parse_args(["--demo"], environ={}).to_dict()  # no width on either side
    check_compatible({"config": {k: v for k, v in tutorial.items() if k != "width"}, "classes": ["a"]},
                     tmp_path / "latest.pt", tutorial, ["a"])


def test_finished_run_rerun_does_not_train_again(tmp_path):
    out = tmp_path / "o"
    args = ["--demo", "--epochs", "1", "--output_dir", out, "--progress", "off", "--log_interval", "500"]
    assert run_train(*args).returncode == 0
    first = summary(out)
    again = run_train(*args)
    assert again.returncode == 0 and "resuming from" in again.stdout
    assert summary(out)["test_accuracy"] == first["test_accuracy"]


@pytest.mark.slow
def test_a_node_lost_without_sigterm_resumes_from_checkpoint_dir_on_an_empty_output_folder(tmp_path, unstopped):
    """Azure ML's preemption as reported: the process is killed (no SIGTERM) and the job restarts on a new node
    whose ./outputs is empty; only --checkpoint_dir (a datastore mount there) survives."""
    checkpoints = tmp_path / "datastore" / "trainjob-checkpoints" / "exp" / "key"
    first_node = tmp_path / "node1-outputs"
    proc = start(first_node, "--checkpoint_dir", str(checkpoints), "--checkpoint_interval", "0.3")
    wait_for_line(proc, "[2,   300]")
    proc.kill()
    proc.communicate(timeout=60)
    assert (checkpoints / "latest.pt").is_file() and not (first_node / "checkpoints").exists()
    shutil.rmtree(first_node)

    second_node = tmp_path / "node2-outputs"
    resumed = run_train(*RUN, "--output_dir", second_node, "--checkpoint_dir", checkpoints,
                        "--checkpoint_interval", "0.3")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {checkpoints}" in resumed.stdout
    assert_same(second_node, unstopped)
    # The whole history came back with the checkpoint: metrics.jsonl and the plots cover both epochs.
    lines = [json.loads(line) for line in (second_node / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * (1250 // 50) + 2 and lines[0]["type"] == "loss" and lines[0]["epoch"] == 1


def test_an_unwritable_checkpoint_dir_is_refused_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_train("--demo", "--epochs", "1", "--output_dir", tmp_path / "o", "--checkpoint_dir",
                       blocker / "checkpoints")
    assert_user_error(result, "cannot write to --checkpoint_dir", str(blocker / "checkpoints"))
    data = tmp_path / "data"
    (data / "cat").mkdir(parents=True)
    inside = run_train("--data_path", data, "--output_dir", tmp_path / "o", "--checkpoint_dir", data / "ck")
    assert_user_error(inside, "--checkpoint_dir", "inside the data folder")


def test_a_metrics_file_cut_shorter_since_the_checkpoint_is_repaired_not_padded(tmp_path):
    out = tmp_path / "o"
    args = ["--demo", "--epochs", "1", "--output_dir", out, "--progress", "off", "--log_interval", "500"]
    assert run_train(*args).returncode == 0
    metrics = out / "metrics.jsonl"
    text = metrics.read_bytes()
    metrics.write_bytes(text[:len(text) // 2])  # e.g. copied back from an interrupted sync
    again = run_train(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    repaired = metrics.read_bytes()
    assert b"\0" not in repaired and repaired.endswith(b"\n")
    assert all(json.loads(line) for line in repaired.splitlines())


def test_a_symlinked_metrics_file_is_refused_and_nothing_is_written_through_it(tmp_path):
    out, elsewhere = tmp_path / "o", tmp_path / "elsewhere.txt"
    out.mkdir()
    elsewhere.write_text("precious\n")
    (out / "metrics.jsonl").symlink_to(elsewhere)
    result = run_train("--demo", "--epochs", "1", "--output_dir", out, "--progress", "off")
    assert_user_error(result, "metrics.jsonl", "a symlink is refused")
    assert elsewhere.read_text() == "precious\n"


def test_divergence_stops_with_exit_3_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "o"
    result = run_train("--demo", "--epochs", "2", "--output_dir", out, "--learning_rate", "1e12",
                       "--momentum", "0.99", "--progress", "off", "--checkpoint_interval", "0")
    assert result.returncode == 3, result.stderr
    assert "the training loss became" in result.stderr and "lower --learning_rate" in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "failure.txt").read_text().startswith("error: the training loss became")


def test_a_second_run_into_a_busy_output_folder_is_refused_and_the_first_finishes(tmp_path):
    out = tmp_path / "o"
    args = ["--demo", "--epochs", "3", "--output_dir", str(out), "--progress", "off"]
    first = subprocess.Popen([sys.executable, "-m", "trainjob", *args], cwd=REPO, env=cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:  # it holds the lock by then
        time.sleep(0.05)
    second = run_train(*args)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    line = assert_user_error(second, "another trainjob run (pid", "is writing to", "another --output_dir")
    assert not (out / "failure.txt").exists(), f"the refused run must not leave its failure there: {line}"


def test_every_rename_is_followed_by_a_fsync_of_its_folder(tmp_path, monkeypatch):
    from trainjob import atomic

    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    atomic.write_json(tmp_path / "summary.json", {"a": 1})
    assert synced[-1] == str(tmp_path), synced  # the file's data first, then its directory entry


def test_sigterm_during_the_end_of_epoch_evaluation_stops_without_waiting_for_it(tmp_path, monkeypatch, capsys):
    """Ten slow evaluation chunks (0.5 s each) stand in for the fast recipe's 30-65 s final evaluation."""
    import threading

    from trainjob import cli, engine
    from trainjob.recipes.tutorial import TutorialRecipe

    monkeypatch.setenv("TRAINJOB_CACHE_DIR", "off")
    monkeypatch.setattr(engine, "EVAL_CHUNK", 100)
    real_eval, signalled = TutorialRecipe.eval_logits, []

    def slow_eval(self, images):
        if not signalled:
            signalled.append(time.monotonic())
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        time.sleep(0.5)
        return real_eval(self, images)

    monkeypatch.setattr(TutorialRecipe, "eval_logits", slow_eval)
    out = tmp_path / "o"
    args = ["--demo", "--epochs", "1", "--output_dir", str(out), "--progress", "off", "--log_interval", "500"]
    code = cli.run(args)
    took = time.monotonic() - signalled[0] - 0.2
    print(f"SIGTERM during evaluation: stopped after {took:.2f} s")
    assert code == 143 and took < 2.0, (code, took)  # the rest of the evaluation would take 4.5 s
    assert "resumable from" in (out / "failure.txt").read_text()
    monkeypatch.undo()
    resumed = run_train(*args)
    assert resumed.returncode == 0 and "resuming from" in resumed.stdout, resumed.stderr[-2000:]
    assert summary(out)["history"][0]["epoch"] == 1


def test_sigterm_while_the_results_are_written_says_the_checkpoint_is_there(tmp_path, monkeypatch):
    from trainjob import cli, job

    monkeypatch.setenv("TRAINJOB_CACHE_DIR", "off")
    monkeypatch.setattr(job, "plot_training_curves", lambda *a: os.kill(os.getpid(), signal.SIGTERM))
    out = tmp_path / "o"
    code = cli.run(["--demo", "--epochs", "1", "--output_dir", str(out), "--progress", "off"])
    assert code == 143
    failure = (out / "failure.txt").read_text()
    assert "resumable from" in failure and "no checkpoint was written" not in failure, failure
    assert (out / "checkpoints" / "latest.pt").is_file()
