#!/usr/bin/env python3
"""make chaos: stop the real image at random moments, resume with the same command, compare with an unstopped run.

Each stop is a `docker stop` (SIGTERM, then SIGKILL after the grace period), as spot eviction and preemption do;
every few stops one is a `docker kill` (SIGKILL, no warning), which must resume from the last periodic checkpoint.
The job is the --demo dataset, so no data is needed; the outputs go to temporary folders on the host.
Prints how many stops were survived and the largest weight difference from the unstopped run (expected: 0).
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

# About 5,000 steps: long enough for every stop to land mid-training; periodic checkpoints every second for SIGKILL.
JOB = ["--demo", "--epochs", "4", "--log_interval", "50", "--progress", "off", "--num_threads", "1",
       "--checkpoint_interval", "1"]


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def run_args(image: str, out: Path, name: str, detach: bool = False) -> list[str]:
    return ["run", *(["--detach"] if detach else []), "--name", name, "--network", "none", "--read-only",
            "--tmpfs", "/tmp", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--user", f"{os.getuid()}:{os.getgid()}",
            "-v", f"{out}:/outputs", image, *JOB]


def unstopped(image: str, out: Path) -> float:
    started = time.monotonic()
    result = docker(*run_args(image, out, "trainjob-chaos-ref"), check=False)
    docker("rm", "-f", "trainjob-chaos-ref", check=False)
    if result.returncode != 0:
        sys.exit(f"error: the unstopped run failed (exit {result.returncode}): {result.stderr[-500:]}")
    return time.monotonic() - started


def wait_for_training(name: str, timeout: float = 120) -> bool:
    """True once the container prints a loss line; False if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "loss:" in docker("logs", name, check=False).stdout:
            return True
        if docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip() != "true":
            return False
        time.sleep(0.2)
    return False


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "model.pt", weights_only=True)["state_dict"]


class Failed(Exception):
    """A container exited other than the stop sent to it expects: printed as one error line, exit 1."""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default="trainjob:latest")
    p.add_argument("--stops", type=int, default=5, help="how many times to stop the job")
    p.add_argument("--seed", type=int, default=None, help="seed for the stop moments (default: random)")
    return p.parse_args()


def stop_once(name: str, kill: bool, rng: random.Random) -> tuple[int, float]:
    """Stop the container at a random moment in its next ~2 s of training: its exit code and seconds to exit."""
    time.sleep(rng.uniform(0.0, 2.0))
    sent = time.monotonic()
    docker("kill" if kill else "stop", *([] if kill else ["-t", "10"]), name, check=False)
    code = int(docker("wait", name).stdout.strip())
    took = time.monotonic() - sent
    docker("rm", name, check=False)
    return code, took


def stop_and_resume(image: str, out: Path, stops: int, rng: random.Random) -> tuple[int, list[float]]:
    """Start the job in out, stop it, start it again with the same command, `stops` times; then let it finish.
    The stops survived, and the seconds each SIGTERM stop took."""
    survived, stop_seconds, attempt = 0, [], 0
    while True:
        attempt += 1
        name = f"trainjob-chaos-{attempt}"
        docker(*run_args(image, out, name, detach=True))
        if survived < stops and wait_for_training(name):
            kill = survived % 3 == 2  # every third stop gives no warning at all
            code, took = stop_once(name, kill, rng)
            if code == 0:
                print(f"stop {survived + 1} came after the job had finished", flush=True)
                return survived, stop_seconds
            expected = 137 if kill else 143
            if code != expected:
                raise Failed(f"after {'docker kill' if kill else 'docker stop'} the container exited {code}, "
                             f"expected {expected}")
            survived += 1
            if not kill:
                stop_seconds.append(took)
            print(f"stop {survived}: {'SIGKILL' if kill else 'SIGTERM'} -> exit {code} in {took:.1f} s", flush=True)
            continue
        code = int(docker("wait", name).stdout.strip())
        docker("rm", name, check=False)
        if code != 0:
            raise Failed(f"the final resumed run exited {code}")
        return survived, stop_seconds


def compare(ref: Path, chaos: Path, survived: int, stop_seconds: list[float]) -> int:
    """Print how the stopped run ended beside the unstopped one: 0 if the weights and test accuracy are the same."""
    a, b = weights(ref), weights(chaos)
    largest = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    same_metrics = json.loads((ref / "summary.json").read_text())["test_accuracy"] == json.loads(
        (chaos / "summary.json").read_text())["test_accuracy"]
    slowest = f", slowest SIGTERM stop {max(stop_seconds):.1f} s (docker allows 10)" if stop_seconds else ""
    print(f"survived {survived} of {survived} stops{slowest}; largest weight difference {largest:g}; "
          f"test accuracy {'identical' if same_metrics else 'DIFFERENT'}")
    return 0 if largest == 0 and same_metrics else 1


def main() -> int:
    args = parse_args()
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        print("error: no Docker engine answers: start one (scripts/docker/start_engine.sh) and `make build`",
              file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="trainjob-chaos-"))
    ref, chaos = work / "unstopped", work / "stopped"
    ref.mkdir()
    chaos.mkdir()
    print(f"chaos seed {seed}; outputs in {work}", flush=True)
    duration = unstopped(args.image, ref)
    print(f"unstopped run: {duration:.1f} s from docker run to exit", flush=True)
    try:
        survived, stop_seconds = stop_and_resume(args.image, chaos, args.stops, rng)
    except Failed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return compare(ref, chaos, survived, stop_seconds)


if __name__ == "__main__":
    sys.exit(main())
