"""The stall watchdog: silence past --stall_timeout ends a run with exit 4 and failure.txt; progress keeps it alive."""

import subprocess
import sys
import threading
import time

from cli_runner import REPO, assert_user_error, cli_env, run_train

from trainjob import watchdog


def test_no_beat_for_the_timeout_calls_the_stall_handler_with_the_phase():
    stalled = []
    done = threading.Event()
    dog = watchdog.Watchdog(0.2, lambda line: (stalled.append(line), done.set())).start()
    watchdog.beat("decoding images")
    try:
        assert done.wait(3), "the watchdog never fired"
    finally:
        dog.stop()
    assert "no progress for" in stalled[0] and "while decoding images" in stalled[0]
    assert "--stall_timeout 0.2" in stalled[0]


def test_steady_beats_keep_it_quiet():
    stalled = []
    dog = watchdog.Watchdog(0.3, stalled.append).start()
    try:
        for _ in range(20):
            watchdog.beat("training")
            time.sleep(0.05)
    finally:
        dog.stop()
    assert stalled == []


def test_a_stalled_process_exits_4_with_the_reason_in_failure_txt(tmp_path):
    """A real process whose main thread is stuck (here: asleep, as it would be in a hung read) is ended at once."""
    code = ("import time; from trainjob import watchdog; "
            f"watchdog.Watchdog(0.5, watchdog.exit_stalled({str(tmp_path)!r})).start(); "
            "watchdog.beat('reading data_batch_1'); time.sleep(60)")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 4, result.stderr
    assert time.monotonic() - started < 30
    failure = (tmp_path / "failure.txt").read_text()
    assert failure.startswith("error: no progress for") and "while reading data_batch_1" in failure


def test_stall_timeout_must_be_a_number_of_seconds(tmp_path):
    assert_user_error(run_train("--demo", "--output_dir", tmp_path, "--stall_timeout", "-1"),
                      "--stall_timeout must be 0 or more seconds")
