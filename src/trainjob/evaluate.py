"""`train evaluate MODEL DATA`: how well a trained model does on labelled images, in any layout training reads.

Writes evaluation.json (accuracy, per-class accuracy, the confusion matrix, every misclassified file with what it
was taken for, the files skipped) and confusion_matrix.png to --output_dir (default: evaluation/ beside the model).
On the images a training run tested on (its test/ folder, CIFAR's test_batch, or --split test for a held-out
share), it gives the same accuracy as that run's summary.json: images are prepared and scored exactly as training's
final evaluation scored them.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from trainjob import contract
from trainjob.atomic import write_json
from trainjob.batch import labelled
from trainjob.batch.stream import score_files, score_pixels
from trainjob.errors import DataError, Stopped, UserError, user_errors_exit
from trainjob.inference import Classifier
from trainjob.metrics import accuracy, confusion_matrix, per_class_accuracy
from trainjob.progress import Progress
from trainjob.text import printable, say, say_err

EVALUATION_FILE = "evaluation.json"
MISCLASSIFIED_KEPT = 10_000  # the list in evaluation.json; the counts cover every image


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=f"a {contract.MODEL_FILE} written by `train` (or the model.onnx of `train export`)")
    p.add_argument("data", help="labelled images: CIFAR batches, train/<class>/ + test/<class>/, <class>/ folders, or "
                   "a manifest (.csv, .jsonl, an MLTable folder)")
    p.add_argument("--split", choices=labelled.SPLITS, default="auto", help="auto: the data's test set if it has "
                   "one (test/, val/, test_batch), else every image; test: for class folders without test/, the "
                   "share training held out (its --val_fraction and --seed, from model.pt); all: every image.")
    p.add_argument("--columns", metavar="IMAGE,LABEL", help="a manifest's image and label columns, as train's "
                   "--columns")
    p.add_argument("--image_root", help="the folder a manifest's azureml:// and blob URLs map to, as train's "
                   "--image_root")
    p.add_argument("--output_dir", help="where evaluation.json and confusion_matrix.png go (default: evaluation/ "
                   "beside MODEL)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: as the model's recipe evaluated (bf16 where the CPU has it natively, fp32 for "
                   "tutorial).")
    p.add_argument("--progress", choices=("auto", "bar", "lines", "off"), default="auto",
                   help="auto: a bar on a terminal, lines in logs.")
    return p


def evaluate(classifier: Classifier, data: labelled.Labelled, *, progress: str = "auto", log=say,
             stop=None) -> dict:
    """Score every image of data -> the evaluation (a dict for evaluation.json) and the confusion matrix."""
    truth = labelled.model_labels(data, classifier.classes)
    predicted = np.full(len(truth), -1, dtype=np.int64)
    confidence = np.zeros(len(truth), dtype=np.float32)
    failures: dict[int, str] = {}
    shown = Progress.images(len(truth), "evaluating", log, progress)
    stopping = lambda: stop is not None and stop.requested  # noqa: E731
    chunks = score_files(classifier, data.paths, stop=stopping) if data.paths is not None else \
        score_pixels(classifier, data.pixels, stop=stopping)
    started = time.monotonic()
    try:
        for scored in chunks:
            for i, probs in scored.probabilities.items():
                predicted[i], confidence[i] = int(probs.argmax()), float(probs.max())
            failures.update(scored.failures)
            shown.advance(scored.count)
    finally:
        shown.close()
    if stop is not None and stop.requested:
        raise stop.stopped(None)
    readable = predicted >= 0
    rows = labelled.held_out_rows(data.labels, readable, len(data.classes), data.held_out) if data.held_out \
        else np.flatnonzero(readable)
    if not len(rows):
        raise DataError(f"none of the {len(truth)} images could be read: expected image files such as .jpg or .png")
    return _results(classifier, data, truth, predicted, confidence, rows, failures, time.monotonic() - started)


def _results(classifier, data, truth, predicted, confidence, rows, failures, seconds) -> dict:
    k = len(classifier.classes)
    confusion = confusion_matrix(torch.from_numpy(truth[rows]), torch.from_numpy(predicted[rows]), k)
    per_class = per_class_accuracy(confusion, classifier.classes)
    wrong = [int(i) for i in rows if predicted[i] != truth[i]]
    skipped = data.skipped + [{"path": data.names[i], "reason": r} for i, r in sorted(failures.items())]
    return {
        "accuracy": accuracy(confusion),
        "images": int(len(rows)),
        "correct": int(len(rows) - len(wrong)),
        "per_class_accuracy": {c: v for i, (c, v) in enumerate(per_class.items()) if confusion[i].sum() > 0},
        "classes": list(classifier.classes),
        "confusion_matrix": confusion.tolist(),
        "misclassified": [{"path": data.names[i], "true": classifier.classes[truth[i]],
                           "predicted": classifier.classes[predicted[i]], "probability": round(float(confidence[i]), 6)}
                          for i in wrong[:MISCLASSIFIED_KEPT]],
        "skipped_files": len(skipped),
        "skipped": skipped[:100],
        "split": data.split,
        "scoring": {"backend": classifier.backend, "precision": classifier.precision, "seconds": round(seconds, 2),
                    "images_per_second": round(len(truth) / max(seconds, 1e-9), 1)},
    }, confusion


def _held_out_settings(classifier: Classifier) -> tuple[float, int]:
    config = getattr(classifier, "saved", {}).get("config", {})
    return float(config.get("val_fraction", 0.1)), int(config.get("seed", 0))


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    from trainjob.report import plot_confusion
    from trainjob.runtime import cpu_quota
    from trainjob.signals import StopRequest

    args = build_parser().parse_args(argv)
    output_dir = Path(args.output_dir) if args.output_dir else Path(args.model).parent / "evaluation"
    classifier = Classifier(args.model, args.precision)
    data = labelled.load(args.data, args.split, *_held_out_settings(classifier), args.columns, args.image_root)
    say(f"evaluating {classifier.path} on {len(data.names)} images of {args.data} ({data.split}; "
        f"{classifier.describe()})", flush=True)
    torch.set_num_threads(cpu_quota())
    stop = StopRequest().install()
    stop.defer()
    try:
        result, confusion = evaluate(classifier, data, progress=args.progress, stop=stop)
    except Stopped as e:
        say_err(str(e).replace("run the same command again to resume", "nothing was written"))
        return e.exit_code
    finally:
        stop.uninstall()
    _write(output_dir, {"model": str(args.model), "data": str(args.data), **result}, confusion, classifier.classes,
           plot_confusion)
    say(f"accuracy {result['accuracy']:.2%} ({result['correct']}/{result['images']} images; "
        f"{result['skipped_files']} skipped); {len(result['misclassified'])} misclassified listed in "
        f"{output_dir / EVALUATION_FILE}; confusion matrix in {output_dir / contract.CONFUSION_FILE}")
    return contract.EXIT_OK


def _write(output_dir: Path, result: dict, confusion, classes, plot_confusion) -> None:
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json(output_dir / EVALUATION_FILE, result)
        plot_confusion(output_dir, confusion, classes)
    except OSError as e:
        raise UserError(f"cannot write to {printable(str(output_dir))} ({e.strerror or e}): pass --output_dir in a "
                        "writable folder") from None


if __name__ == "__main__":
    sys.exit(main())
