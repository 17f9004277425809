#!/usr/bin/env python3
"""make bench-predict: images/s and peak RSS of `train predict FOLDER --output predictions.csv` for a tutorial, a fast
and a transfer model, each as model.pt (PyTorch) and as its model.onnx (onnxruntime), against the bare forward of the
same model and against `train serve`, all in one invocation.

The images are the real photos of ../shared/datasets/photos20.tar (1,552 photos of 100-3,300 px, 20 classes),
repeated under distinct names (hard links, made once in the bench cache) up to --images. The models are trained here
on photos20 with short settings (the speed of scoring does not depend on how well they learned). Per model:
- `train predict MODEL FOLDER --output X.csv --progress off`, its own process: wall time from start to exit, the
  scoring rate predict itself logs (its loop: decoding, scoring, writing), and the process's peak RSS;
- the bare forward (predict_forward.py, its own process, once before and once after predict): the same Classifier,
  precision, threads and chunk on the distinct photos already decoded; predict/bare is predict's scoring rate over
  the mean of the two (what decoding and writing cost);
- `train serve MODEL` on loopback (model.pt only: serve takes no .onnx), --serve_images photos one per request from
  1 client and from one per CPU (bench_serve.py's server and load).

    make bench-predict                                        10,000 images, all three recipes
    make bench-predict ARGS="--images 300"                    a quick check
    make bench-predict ARGS="--recipes transfer --models_dir build/bench/models"   train once, reuse after
"""

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from bench import bench_serve  # noqa: E402
from bench.bench_fast import finish, train_command, uptime  # noqa: E402
from bench.bench_transfer import timed_run  # noqa: E402
from bench.predict_forward import host_facts  # noqa: E402
from bench.shared_data import CACHE, photos20  # noqa: E402
from trainjob.batch.stream import CHUNK  # noqa: E402 - predict's default chunk
from trainjob.onnx_cache import FASTER_IN_ONNXRUNTIME  # noqa: E402 - the choice --engine auto makes

RECIPES = ("tutorial", "fast", "transfer")
# Short training for each recipe (bench_serve's for tutorial and transfer): a model to score, not a good one.
bench_serve.TRAIN.setdefault("fast", ["--recipe", "fast", "--epochs", "2"])
RESULTS = REPO / "build" / "bench" / "predict.json"
SCORED = re.compile(r"scored (\d+) images.*\((\d+) images/s; ([^)]*)\)")


def resized_photos(side: int) -> list[Path]:
    """photos20's photos fitted within side x side (JPEG, quality 90), made once in the bench cache: the size of
    the issue's memory target (12,000 photos of 320 px)."""
    from PIL import Image

    folder = CACHE / f"photos20-{side}px"
    if not folder.is_dir():
        print(f"resizing photos20 to {side} px into {folder} (once)", flush=True)
        tmp = folder.with_name(folder.name + ".part")
        for photo in sorted(photos20().rglob("*.jpg")):
            target = tmp / photo.parent.name / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(photo) as im:
                im = im.convert("RGB")
                im.thumbnail((side, side))
                im.save(target, quality=90)
        os.replace(tmp, folder)
    return sorted(folder.rglob("*.jpg"))


def scoring_folder(n: int, side: int | None = None) -> tuple[Path, int]:
    """A folder of n photos20 files (fitted within side px if given), 000000-<class>-<name> in sorted order (the
    distinct photos first), made once with hard links (symlinks where the file system refuses); and how many
    distinct photos it has."""
    photos = resized_photos(side) if side else sorted(photos20().rglob("*.jpg"))
    folder = CACHE / (f"photos20-{side}px-x{n}" if side else f"photos20-x{n}")
    if not folder.is_dir():
        print(f"linking {n} images into {folder} (once)", flush=True)
        tmp = folder.with_name(folder.name + ".part")
        tmp.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            photo = photos[i % len(photos)]
            link = tmp / f"{i:06d}-{photo.parent.name}-{photo.name}"
            if not link.exists():
                try:
                    os.link(photo, link)
                except OSError:
                    link.symlink_to(photo)
        os.replace(tmp, folder)
    return folder, min(n, len(photos))


def model_for(recipe: str, models: Path) -> Path:
    """models/<recipe>/model.pt, trained there first when it is missing (bench_serve's short settings)."""
    found = models / recipe / "model.pt"
    return found if found.is_file() else bench_serve.train_model(recipe, models)


def onnx_for(model: Path, work: Path, env: dict) -> Path:
    """model.onnx beside model.pt, exported (and checked against PyTorch by `train export`) unless already newer."""
    onnx = model.with_name("model.onnx")
    if not onnx.is_file() or onnx.stat().st_mtime < model.stat().st_mtime:
        cmd = [*train_command(), "export", str(model), "--output", str(onnx)]
        print(f"$ {' '.join(cmd)}", flush=True)
        timed_run(cmd, work / f"export-{model.parent.name}.log", env)
    return onnx


def predict_figures(model: Path, folder: Path, images: int, name: str, work: Path, env: dict, chunk: int,
                    flags: tuple[str, ...] = ()) -> dict:
    """One `train predict --output` run into a new file. Peak RSS comes from os.wait4 on that child alone (in
    timed_run): getrusage(RUSAGE_CHILDREN) would be the largest of every child reaped so far (the training runs
    included), and predict decodes in threads, not processes, so the child's own figure is the whole of it."""
    out = work / f"{name}.csv"
    out.unlink(missing_ok=True)  # an existing file would be resumed, not scored again
    cmd = [*train_command(), "predict", str(model), str(folder), "--output", str(out), "--progress", "off",
           "--chunk", str(chunk), *flags]
    print(f"$ {' '.join(cmd)}", flush=True)
    run = timed_run(cmd, work / f"{name}.log", env)
    found = SCORED.search(run["log"])
    rows = sum(1 for _ in out.open()) - 1  # less the header
    if not found or int(found[1]) != images or rows != images:
        sys.exit(f"error: predict scored {found[1] if found else '?'} images, wrote {rows} rows, expected "
                 f"{images}; its log: {work / f'{name}.log'}")
    return {"wall_s": run["wall"], "wall_images_per_s": images / run["wall"], "images_per_s": float(found[2]),
            "engine": found[3], "rss_mb": run["rss_mb"]}


def bare_rate(model: Path, folder: Path, distinct: int, log: Path, env: dict, chunk: int) -> float:
    """Images/s of the bare forward (predict_forward.py), in its own process."""
    cmd = [sys.executable, str(Path(__file__).with_name("predict_forward.py")), str(model), str(folder),
           "--images", str(distinct), "--chunk", str(chunk)]
    return json.loads(timed_run(cmd, log, env)["log"].strip().splitlines()[-1])["images_per_s"]


def serve_figures(model: Path, bodies: list[bytes], clients: list[int], workers: int) -> dict:
    """Images/s of `train serve` (one image per request) at each number of clients; bench_serve's server and load."""
    served = bench_serve.Served(model, workers)
    try:
        bench_serve.load(served.port, bodies[:5], 1)  # warm-up: the first requests import and allocate
        return {c: bench_serve.load(served.port, bodies, c)["rps"] for c in clients}
    finally:
        served.close()


def measure(recipe: str, args, folder: Path, distinct: int, work: Path, env: dict, bodies: list[bytes]) -> list:
    model = model_for(recipe, args.models_dir or work)
    rows = []
    for engine, path in (("torch", model), ("onnx", onnx_for(model, work, env))):
        name = f"{recipe}-{engine}"
        # The bare forward once before and once after predict's run: on a shared host the two differ by how much
        # the load changed (a warning below), and predict/bare uses their mean.
        before = bare_rate(path, folder, distinct, work / f"{name}-bare-before.log", env, args.chunk)
        # model.pt in PyTorch whatever --engine auto would choose: the comparison that choice is made on
        flags = ("--engine", "torch") if engine == "torch" else ()
        row = {"recipe": recipe, "model": path.name, "images": args.images,
               **predict_figures(path, folder, args.images, name, work, env, args.chunk, flags)}
        after = bare_rate(path, folder, distinct, work / f"{name}-bare-after.log", env, args.chunk)
        bare = (before + after) / 2
        row.update(bare=bare, bare_before_after=[before, after], ratio=row["images_per_s"] / bare,
                   wall_ratio=row["wall_images_per_s"] / bare)
        rows.append(row)
    clients = sorted({1, len(os.sched_getaffinity(0))})  # 1 client, and one per CPU this process may use
    rows[0]["serve"] = serve_figures(model, bodies, clients, args.serve_workers)  # serve scores model.pt only
    return rows


def print_table(rows: list[dict], host: dict, args) -> None:
    resize = f" --resize {args.resize}" if args.resize else ""
    print(f"\n`make bench-predict ARGS=\"--images {args.images}{resize}\"`, {host['cpu']} ({host['host']}; "
          f"{host['cpus']} CPUs; native bf16: {', '.join(host['bf16_flags']) or 'none'}):\n")
    print("| recipe | model | engine | images | wall s | images/s (wall) | images/s (scoring) "
          "| peak RSS MB | bare forward images/s | predict/bare (scoring; wall) | serve images/s (clients: rate) |")
    print("| --- " * 11 + "|")
    for r in rows:
        serve = ", ".join(f"{c}: {v:.1f}" for c, v in r["serve"].items()) if "serve" in r else "-"
        print(f"| {r['recipe']} | {r['model']} | {r['engine']} | {r['images']} | {r['wall_s']:.1f} "
              f"| {r['wall_images_per_s']:.1f} | {r['images_per_s']:.0f} | {r['rss_mb']:.0f} "
              f"| {r['bare']:.1f} | {r['ratio']:.0%}; {r['wall_ratio']:.0%} | {serve} |")
    for r in rows:
        before, after = r["bare_before_after"]
        if abs(before - after) > 0.1 * max(before, after):
            print(f"{r['recipe']} {r['model']}: the bare forward ran at {before:.1f} images/s before predict and "
                  f"{after:.1f} after: the host's load changed, read that row's ratio with care")
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        torch_row, onnx_row = (next(r for r in rows if r["recipe"] == recipe and r["model"] == m)
                               for m in ("model.pt", "model.onnx"))
        gain = onnx_row["images_per_s"] / torch_row["images_per_s"] - 1
        verdict = "FASTER than" if gain > 0.05 else "slower than" if gain < -0.05 else "within 5 % of"
        default = "onnxruntime" if recipe in FASTER_IN_ONNXRUNTIME else "torch"
        print(f"{recipe}: predict in onnxruntime is {verdict} in PyTorch: {onnx_row['images_per_s']:.0f} against "
              f"{torch_row['images_per_s']:.0f} images/s ({gain:+.0%}; bare forward {onnx_row['bare']:.1f} against "
              f"{torch_row['bare']:.1f}); `train predict model.pt` (--engine auto) scores it in {default}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=10_000, help="images per `train predict` run (photos20 repeated)")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated, from " + ", ".join(RECIPES))
    p.add_argument("--models_dir", type=Path, help="use DIR/<recipe>/model.pt, training into DIR where it is missing "
                   "(default: train into the work folder)")
    p.add_argument("--resize", type=int, metavar="PX", help="score the photos fitted within PX x PX (e.g. 320) "
                   "instead of their own sizes (100-3,300 px)")
    p.add_argument("--chunk", type=int, default=CHUNK, help="predict's --chunk (and the bare forward's); default: "
                   "predict's own")
    p.add_argument("--serve_images", type=int, default=200, help="photos posted to `train serve` per client count")
    p.add_argument("--serve_workers", type=int, default=1, help="train serve --workers")
    p.add_argument("--keep", action="store_true", help="keep the work folder (predictions, logs, models)")
    args = p.parse_args()
    recipes = [r for r in args.recipes.split(",") if r]
    if unknown := set(recipes) - set(RECIPES):
        p.error(f"unknown recipe(s) {', '.join(sorted(unknown))}: choose from {', '.join(RECIPES)}")
    load_before, host = uptime(), host_facts()
    print(f"{load_before}\n{host['cpu']} ({host['host']}, {host['cpus']} CPUs)", flush=True)
    folder, distinct = scoring_folder(args.images, args.resize)
    photos = sorted(folder.iterdir())[:distinct]
    bodies = [f.read_bytes() for f in photos[::max(1, distinct // args.serve_images)][:args.serve_images]]
    work = Path(tempfile.mkdtemp(prefix="trainjob-bench-predict-"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rows = [row for recipe in recipes for row in measure(recipe, args, folder, distinct, work, env, bodies)]
    print_table(rows, host, args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"host": host, "images": args.images, "chunk": args.chunk, "rows": rows,
                                   "serve_images": len(bodies), "load_before": load_before,
                                   "load_after": uptime()}, indent=1) + "\n")
    print(f"results            {RESULTS}")
    finish(work, args.keep, load_before)


if __name__ == "__main__":
    main()
