#!/usr/bin/env python3
"""make bench-serve: `train serve` (the Azure ML inference server) under load on loopback, against `train predict`.

For a tutorial model and a transfer model, each trained here on real photos (../shared/datasets/photos20.tar, any
size, JPEG): requests per second and p50/p99 latency of POST /score with one photo per request, from 1 and from 4
clients at once (each on its own kept-alive connection), and what a user would otherwise script: one `train predict`
process per photo, and one `train predict` call for all of them.

The hostile row: POST /score throughput from 4 clients for --hostile-seconds, and the p99 of GET / probed on a new
connection every 50 ms meanwhile, first quiet, then while --slow clients send a request head a byte a second (never
finishing it) and --idle connections send nothing, each reopened when the server closes it (hostile.py).

    make bench-serve                                  both models, 200 requests per concurrency level
    make bench-serve ARGS="--requests 500 --workers 2"
    make bench-serve ARGS="--tutorial-model outputs/model.pt --transfer-model other/model.pt"   skip the training
    make bench-serve ARGS="--gunicorn-args '--worker-class sync --threads 1'"   the server as azmlinfsrv starts it
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from bench.bench_fast import cpu_model, train_command, uptime  # noqa: E402
from bench.hostile import Hostile, Prober  # noqa: E402
from bench.shared_data import photos20  # noqa: E402

TRAIN = {"tutorial": ["--epochs", "2"], "transfer": ["--recipe", "transfer", "--epochs", "3"]}


def train_model(recipe: str, work: Path) -> Path:
    out = work / recipe
    cmd = [*train_command(), "--data_path", str(photos20()), "--output_dir", str(out), "--val_fraction", "0.2",
           "--progress", "off", *TRAIN[recipe]]
    print(f"$ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out / "model.pt"


class Served:
    """`train serve MODEL` on a free port, until closed."""

    def __init__(self, model: Path, workers: int, gunicorn_args: str = ""):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {**os.environ, "GUNICORN_CMD_ARGS": gunicorn_args} if gunicorn_args else None
        self.proc = subprocess.Popen([*train_command(), "serve", str(model), "--port", str(self.port), "--workers",
                                      str(workers)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 180
        while True:
            try:
                if self.get("/")[0] == 200:
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"error: train serve {model} did not start")
                time.sleep(0.3)

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def load(port: int, bodies: list[bytes], clients: int) -> dict:
    """Send every body once, from `clients` threads on kept-alive connections; latencies in ms."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    queue = list(reversed(bodies))

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if not queue:
                    break
                body = queue.pop()
            started = time.perf_counter()
            conn.request("POST", "/score", body, {"Content-Type": "image/jpeg"})
            response = conn.getresponse()
            response.read()
            elapsed = (time.perf_counter() - started) * 1000
            with lock:
                latencies.append(elapsed)
                if response.status != 200:
                    errors.append(str(response.status))
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        sys.exit(f"error: {len(errors)} requests failed ({', '.join(sorted(set(errors)))})")
    cuts = statistics.quantiles(latencies, n=100)
    return {"rps": len(bodies) / wall, "p50": statistics.median(latencies), "p99": cuts[98]}


def load_for(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict:
    """POST the bodies round and round from `clients` threads for `seconds`: answers per second; a request that
    fails or is not 200 counts as an error (and its client connects again)."""
    counts = {"ok": 0, "errors": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(first: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = first
        while time.monotonic() < deadline:
            try:
                conn.request("POST", "/score", bodies[n % len(bodies)], {"Content-Type": "image/jpeg"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                counts["ok" if ok else "errors"] += 1
            n += clients
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"rps": counts["ok"] / (time.perf_counter() - started), "errors": counts["errors"]}


def hostile_figures(port: int, bodies: list[bytes], args) -> dict:
    """Scoring throughput (4 clients) and GET / latency, quiet and then with the hostile clients held open."""
    figures = {}
    for phase in ("quiet", "hostile"):
        hostile = Hostile(port, args.slow, args.idle) if phase == "hostile" else None
        prober = Prober(port)
        try:
            scored = load_for(port, bodies, 4, args.hostile_seconds)
        finally:
            figures[phase] = {"score": scored, "liveness": prober.stop()}
            if hostile:
                hostile.stop()
                figures[phase].update(cut_off=hostile.cut_off, reopened=hostile.reopened)
    return figures


def predict_figures(model: Path, images: list[Path], per_process: int) -> dict:
    """`train predict` one process per image (the first per_process images), and once for all of them."""
    started = time.perf_counter()
    for image in images[:per_process]:
        subprocess.run([*train_command(), "predict", str(model), str(image)], check=True, stdout=subprocess.DEVNULL)
    one_each = (time.perf_counter() - started) / per_process
    started = time.perf_counter()
    subprocess.run([*train_command(), "predict", str(model), *map(str, images)], check=True,
                   stdout=subprocess.DEVNULL)
    return {"per_process_s": one_each, "batch_images_per_s": len(images) / (time.perf_counter() - started)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200, help="requests per concurrency level (one photo each)")
    p.add_argument("--workers", type=int, default=1, help="train serve --workers")
    p.add_argument("--predict-processes", type=int, default=10, help="`train predict` runs of one photo each")
    p.add_argument("--tutorial-model", type=Path, help="a tutorial model.pt to use instead of training one")
    p.add_argument("--transfer-model", type=Path, help="a transfer model.pt to use instead of training one")
    p.add_argument("--hostile-seconds", type=float, default=20, help="length of each half of the hostile row "
                   "(default 20; 0 leaves the row out; over the server's 10 s header timeout, the slow clients are "
                   "cut off and come back)")
    p.add_argument("--hostile-only", action="store_true", help="only the hostile row: no load levels, no predict")
    p.add_argument("--slow", type=int, default=50, choices=range(0, 501), metavar="0-500",
                   help="hostile row: clients sending a request head a byte a second (default 50)")
    p.add_argument("--idle", type=int, default=200, choices=range(0, 2001), metavar="0-2000",
                   help="hostile row: connections sending nothing (default 200)")
    p.add_argument("--gunicorn-args", default="", help="GUNICORN_CMD_ARGS for the server, e.g. '--worker-class "
                   "sync --threads 1' for the inference server's own default")
    return p.parse_args()


def measure(model: Path, bodies: list[bytes], images: list[Path], args) -> dict:
    """One model's figures: load levels and predict (unless --hostile-only), the hostile row (unless 0 s)."""
    figures = {}
    served = Served(model, args.workers, args.gunicorn_args)
    try:
        load(served.port, bodies[:5], 1)  # warm-up: the first requests import and allocate
        if not args.hostile_only:
            figures["serve"] = {c: load(served.port, bodies, c) for c in (1, 4)}
        if args.hostile_seconds > 0:
            figures["hostile"] = hostile_figures(served.port, bodies, args)
    finally:
        served.close()
    if not args.hostile_only:
        figures["predict"] = predict_figures(model, images, args.predict_processes)
    return figures


def print_tables(rows: dict, args) -> None:
    flags = " ".join(a for a in sys.argv[1:] if not a.endswith(".pt") and not a.endswith("-model"))
    print(f"\n`make bench-serve ARGS=\"{flags}\"`, {cpu_model()}:\n")
    if not args.hostile_only:
        print("| model | serve, 1 client: req/s, p50 / p99 ms | serve, 4 clients: req/s, p50 / p99 ms "
              "| `train predict` per photo (1 process each) | `train predict`, all photos in one call |")
        print("| --- | --- | --- | --- | --- |")
        for recipe, r in rows.items():
            one, four, pr = r["serve"][1], r["serve"][4], r["predict"]
            print(f"| {recipe} | {one['rps']:.1f}, {one['p50']:.0f} / {one['p99']:.0f} | {four['rps']:.1f}, "
                  f"{four['p50']:.0f} / {four['p99']:.0f} | {pr['per_process_s']:.2f} s "
                  f"({1 / pr['per_process_s']:.2f}/s) | {pr['batch_images_per_s']:.1f} images/s |")
    if args.hostile_seconds > 0:
        print(f"\nHostile row: {args.slow} slow + {args.idle} idle connections, {args.hostile_seconds:g} s each half; "
              "POST /score from 4 clients, GET / on a new connection every 50 ms\n")
        print("| model | quiet: /score req/s, GET / p99 ms | hostile: /score req/s (vs quiet), GET / p99 ms "
              "(failed probes) | slow clients cut off (408), reconnections slow / idle |")
        print("| --- | --- | --- | --- |")
        for recipe, r in rows.items():
            quiet, bad = r["hostile"]["quiet"], r["hostile"]["hostile"]
            ratio = bad["score"]["rps"] / quiet["score"]["rps"] - 1 if quiet["score"]["rps"] else float("nan")
            print(f"| {recipe} | {quiet['score']['rps']:.1f}, {quiet['liveness']['p99']:.0f} | "
                  f"{bad['score']['rps']:.1f} ({ratio:+.0%}), {bad['liveness']['p99']:.0f} "
                  f"({bad['liveness']['failed']} of {bad['liveness']['probes']}) | {bad['cut_off']}, "
                  f"{bad['reopened']['slow']} / {bad['reopened']['idle']} |")


def main() -> None:
    args = parse_args()
    load_before = uptime()
    every = sorted(photos20().rglob("*.jpg"))
    images = every[::max(1, len(every) // args.requests)][:args.requests]  # spread over all 20 classes
    bodies = [path.read_bytes() for path in images]
    print(f"host: {cpu_model()}, {os.cpu_count()} CPUs; {len(bodies)} photos from photos20, "
          f"{sum(map(len, bodies)) / len(bodies) / 1e3:.0f} kB on average; {load_before}", flush=True)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        models = {"tutorial": args.tutorial_model, "transfer": args.transfer_model}
        for recipe, model in models.items():
            rows[recipe] = measure(model or train_model(recipe, Path(tmp)), bodies, images, args)
    print_tables(rows, args)
    print(f"\nload before: {load_before}\nload after:  {uptime()}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
