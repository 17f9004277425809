"""The Azure ML batch deployment's scoring script: init() loads the registered model, run(mini_batch) scores a list
of image files and returns one CSV line per file (`make deploy-batch-aml`; scripts/aml/serving/batch_score.py is the
file Azure ML loads, and it imports these two).

The files go through the same streaming code as `train predict` (stream.score_files, top_classes, the Classifier),
and each line has the columns of `train predict --output predictions.csv` (predictions.header(TOP)): path, class_1,
probability_1, ..., error. A file that cannot be read gets a line with its error instead of failing the mini-batch,
so every file of a mini-batch has a line and Azure ML counts none as failed. The deployment's output_action
append_row gathers the lines of every mini-batch into one file, without a header and in no fixed order.
"""

import csv
import io
import os

from trainjob import contract
from trainjob.batch.inputs import Inputs, row_path
from trainjob.batch.predictions import Row, csv_cells, header
from trainjob.batch.stream import CHUNK, score_files, scored_rows
from trainjob.errors import UserError
from trainjob.inference import Classifier
from trainjob.onnx_cache import classifier_for
from trainjob.text import say

MODEL_DIR = contract.ENV_AZUREML_MODEL_DIR  # where Azure ML mounts the deployment's registered model
TOP = 3  # classes per file: train predict's default --top
COLUMNS = header(TOP)

_classifier: Classifier | None = None


def init() -> None:
    """Once per worker process, before any run(): the model.pt under $AZUREML_MODEL_DIR (however deep Azure ML put
    it), on every CPU the process may use."""
    global _classifier
    import torch

    from trainjob.runtime import cpu_quota

    root = os.environ.get(MODEL_DIR)
    if not root:
        raise UserError(f"{MODEL_DIR} is not set: this is the scoring script of an Azure ML batch deployment, "
                        "which sets it to the registered model's folder (locally, use train predict)")
    torch.set_num_threads(cpu_quota())
    # As train predict scores by default: onnxruntime for transfer models, exported once per node into the cache.
    _classifier = classifier_for(root, "auto", "auto", os.environ.get(contract.ENV_CACHE_DIR), say)
    say(f"trainjob batch scoring: {_classifier.path} ({_classifier.describe()}), {len(_classifier.classes)} "
        f"classes; columns {','.join(COLUMNS)}", flush=True)


def run(mini_batch) -> list[str]:
    """mini_batch: the paths of a mini-batch's files -> one CSV line (no newline) per file."""
    if _classifier is None:
        raise RuntimeError("run() before init(): Azure ML calls init() once first")
    inputs = _listed([os.fspath(p) for p in mini_batch])
    rows = [Row(row_path(p), None, reason) for p, reason in inputs.skipped]
    for scored in score_files(_classifier, inputs.paths, chunk=CHUNK):
        rows += scored_rows(scored, inputs.paths, _classifier.classes, TOP)
    return [csv_line(row) for row in rows]


def _listed(paths: list[str]) -> Inputs:
    """The files as `train predict` lists them: an empty or vanished file is skipped with its reason."""
    inputs = Inputs()
    for path in paths:
        try:
            inputs.add_file(path, os.stat(path).st_size)
        except OSError as e:
            inputs.skipped.append((path, f"unreadable ({e.strerror or e})"))
    return inputs


def csv_line(row: Row) -> str:
    """One row as a line of the predictions CSV, without its newline (append_row adds one per returned item)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(csv_cells(row, TOP))
    return out.getvalue()
