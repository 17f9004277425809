"""`train predict MODEL PATH...`: the top classes of each image, from a trained model.pt (or its model.onnx).

Each PATH is an image file or a folder (walked recursively, like a class folder in training); --from LIST adds one
path per line (- for stdin). Without --output the classes are printed; with --output predictions.csv (or .jsonl)
one row per image is appended chunk by chunk, and a rerun with the same --output continues where the last one
stopped. A file that cannot be read gets a row with its error and is counted, never fatal.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from trainjob import contract
from trainjob.batch.inputs import Inputs, gather, row_path
from trainjob.batch.predictions import PredictionsFile, Row
from trainjob.batch.stream import CHUNK, score_files, scored_rows
from trainjob.errors import DataError, Stopped, UserError, user_errors_exit
from trainjob.inference import Classifier, classify, load_model  # noqa: F401 - load_model, classify: the old home
from trainjob.onnx_cache import ENGINES, classifier_for
from trainjob.progress import Progress
from trainjob.text import printable, say, say_err


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=f"a {contract.MODEL_FILE} written by `train` (or the folder holding "
                   "it), or the model.onnx of `train export`")
    p.add_argument("paths", nargs="*", metavar="PATH", help="image files (any format and size PIL reads) or folders")
    p.add_argument("--from", dest="from_list", metavar="LIST", help="a text file of image paths, one per line "
                   "(relative ones are read from its folder); - reads stdin")
    p.add_argument("--output", metavar="FILE", help="write one row per image to FILE (.csv or .jsonl), resuming "
                   "an earlier run's file; default: print")
    p.add_argument("--top", type=_positive, default=3, help="how many classes per image")
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 where the CPU has it natively (fp32 for tutorial models, as they were trained).")
    p.add_argument("--engine", choices=ENGINES, default="auto", help="auto: onnxruntime for transfer models (about "
                   "twice PyTorch's speed there; exported once into the cache folder, TRAINJOB_CACHE_DIR), PyTorch "
                   "for the others, whose recipes it scores as fast or faster; torch, onnxruntime: always that one.")
    p.add_argument("--chunk", type=_positive, default=CHUNK, help="images per forward pass")
    p.add_argument("--progress", choices=("auto", "bar", "lines", "off"), default="auto",
                   help="auto: a bar on a terminal, lines in logs.")
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def read_image(path: str, size: int) -> torch.Tensor:
    """One image file -> (3, size, size) uint8, prepared exactly as training prepared image folders."""
    from trainjob.preprocess import UnreadableImage, decode_file

    try:
        return torch.tensor(decode_file(path, size))  # a copy: PIL's buffer is read-only
    except UnreadableImage as e:
        raise UserError(f"cannot read image {path}: {e}; expected an image file such as .jpg or .png") from None


class _Printed:
    """Rows to stdout, as text or JSON: the destination when there is no --output. A text line is escaped (say): a
    class name or a file name may hold a terminal escape; JSON keeps the exact strings, which json.dumps writes with
    every control character as \\u001b and the like, so they are safe to print too."""

    def __init__(self, as_json: bool):
        self.as_json, self.written = as_json, 0

    def open(self) -> set[str]:
        return set()

    def append(self, rows: list[Row]) -> None:
        for row in rows:
            if self.as_json:
                top = None if row.top is None else [{"class": c, "probability": v} for c, v in row.top]
                print(json.dumps({"image": row.path, "top": top, **({"error": row.error} if row.error else {})}))
            elif row.error:
                say(f"{Path(row.path).name}: cannot read ({row.error})")
            else:
                say(f"{Path(row.path).name}: " + ", ".join(f"{c} {v:.1%}" for c, v in row.top))
        sys.stdout.flush()
        self.written += len(rows)

    def close(self) -> None:
        pass


def predict(classifier: Classifier, inputs: Inputs, out, top: int, *, chunk: int = CHUNK, progress: str = "auto",
            log=say, stop=None) -> dict:
    """Score inputs into out (a PredictionsFile or the printer), skipping what it holds; returns the counts."""
    done = out.open()
    try:
        errors = [Row(row_path(p), None, reason) for p, reason in inputs.skipped if row_path(p) not in done]
        out.append(errors)
        todo = [p for p in inputs.paths if row_path(p) not in done]
        already = len(inputs.paths) + len(inputs.skipped) - len(todo) - len(errors)
        if already:
            log(f"{already} images already in {printable(str(out.path))}: scoring the other {len(todo)}")
        shown = Progress.images(len(todo), "scoring images", log, progress)
        counts, started = {"scored": 0, "skipped": len(errors), "already": already}, time.monotonic()
        try:
            for scored in score_files(classifier, todo, chunk=chunk, stop=lambda: stop is not None and stop.requested):
                out.append(scored_rows(scored, todo, classifier.classes, top))
                counts["scored"] += len(scored.probabilities)
                counts["skipped"] += len(scored.failures)
                shown.advance(scored.count)
        finally:
            shown.close()
        counts["seconds"] = time.monotonic() - started
        if stop is not None and stop.requested:
            raise stop.stopped(None)
        return counts
    finally:
        out.close()


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    from trainjob.runtime import cpu_quota
    from trainjob.signals import StopRequest

    args = build_parser().parse_args(argv)
    out = PredictionsFile(args.output, args.top) if args.output else _Printed(args.json)
    log = say if args.output else say_err  # without --output, stdout holds the rows alone
    inputs = gather(args.paths, args.from_list)
    torch.set_num_threads(cpu_quota())
    classifier = classifier_for(args.model, args.precision, args.engine, os.environ.get(contract.ENV_CACHE_DIR), log)
    stop = StopRequest().install()
    stop.defer()
    try:
        with stop.keeping(f"every finished row is in {args.output}" if args.output else "nothing more is printed"):
            counts = predict(classifier, inputs, out, args.top, chunk=args.chunk, progress=args.progress, log=log,
                             stop=stop)
    except Stopped as e:
        say_err(e)
        return e.exit_code
    finally:
        stop.uninstall()
    rate = counts["scored"] / max(counts["seconds"], 1e-9)
    where = f" to {printable(args.output)}" if args.output else ""
    log(f"scored {counts['scored']} images{where}, skipped {counts['skipped']} unreadable"
        + (f", {counts['already']} already done" if counts["already"] else "")
        + f" ({rate:.0f} images/s; {classifier.describe()})")
    if counts["scored"] == 0 and counts["already"] == 0:
        raise DataError(f"none of the {counts['skipped']} files could be read as an image: expected image files "
                        "such as .jpg or .png")
    return contract.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
