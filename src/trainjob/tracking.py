"""Where metrics go: stdout, <output_dir>/metrics.jsonl, and the Azure ML run when inside one.

Only the main process (rank 0) tracks. metrics.jsonl is the record plots and summaries are made from; a resumed run
truncates it back to where its checkpoint was taken, so it reads as if the run had never stopped.
"""

import json
import os
from pathlib import Path

from trainjob import contract
from trainjob.atomic import append_whole
from trainjob.errors import UserError


def azure_run():
    """The Azure ML Run this process belongs to, or None (without azureml-core installed, or an offline run).

    Call it only inside an Azure ML run (AZUREML_RUN_ID is set: RunContext.tracks_azureml): outside one
    Run.get_context() returns an offline run whose log() only prints, and the SDK is slow to import.
    """
    try:
        from azureml.core import Run
    except ImportError:
        print("warning: inside an Azure ML run but azureml-core is not installed: metrics go to metrics.jsonl only "
              "(install trainjob[azure] in the image)", flush=True)
        return None
    run = Run.get_context()
    return None if type(run).__name__ == "_OfflineRun" else run


class Tracker:
    def __init__(self, output_dir: Path, enabled: bool, run=None, truncate_at: int | None = None,
                 saved: str | None = None, mlflow=None):
        """truncate_at and saved: a resumed run's metrics_offset and the lines up to it, from its checkpoint."""
        self.enabled = enabled
        self.run = run
        self.mlflow = mlflow  # an mlflow_log.MlflowRun, or None
        self.path = Path(output_dir) / contract.METRICS_FILE
        self._file = None
        if enabled:
            try:  # O_NOFOLLOW: a symlink planted in the output folder must not send our writes elsewhere
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            except OSError as e:
                raise UserError(f"cannot open {self.path}: {e.strerror or e} (a symlink is refused); remove it or "
                                "pass another --output_dir") from None
            self._file = os.fdopen(fd, "r+b", buffering=0)  # unbuffered: a full disk is met in _record, not at close
            self._resume_at(truncate_at or 0, saved)  # fresh: empty; resumed: as it was at the checkpoint
            self._file.seek(0, os.SEEK_END)

    def _resume_at(self, offset: int, saved: str | None) -> None:
        """Cut the file back to the checkpoint's offset. Where it is shorter (a new node after preemption starts
        with an empty output folder, or the file was cut since), the checkpoint's own copy of the lines is put
        back; failing that (a checkpoint older than that copy), its last whole line is kept: truncating past the end
        would pad it with NUL bytes."""
        size = self._file.seek(0, os.SEEK_END)
        if offset <= size:
            self._file.truncate(offset)
            return
        if saved is not None and len(saved.encode()) == offset:
            self._file.seek(0)
            self._file.truncate(0)
            append_whole(self._file.fileno(), saved.encode(), self.path)
            return
        self._file.seek(0)
        self._file.truncate(self._file.read().rfind(b"\n") + 1)

    @property
    def offset(self) -> int:
        """Bytes of metrics.jsonl written so far: stored in checkpoints."""
        return self._file.tell() if self._file else 0

    def written(self) -> str:
        """metrics.jsonl so far, for checkpoints: a run resumed on another machine gets its whole history back."""
        if not self._file:
            return ""
        end = self._file.tell()
        self._file.seek(0)
        text = self._file.read(end).decode()
        self._file.seek(end)
        return text

    def loss(self, epoch: int, step: int, global_step: int, value: float) -> None:
        if not self.enabled:
            return
        print(f"[{epoch + 1}, {step:5d}] loss: {value:.3f}", flush=True)  # the tutorial's line
        self._record({"type": "loss", "epoch": epoch + 1, "step": step, "global_step": global_step, "loss": value})
        if self.run is not None:
            self.run.log("loss", value)
        if self.mlflow is not None:
            self.mlflow.metrics({"loss": value}, step=global_step)

    def epoch(self, metrics: dict) -> None:
        if not self.enabled:
            return
        print(f"epoch {metrics['epoch']}: train loss {metrics['train_loss']:.4f}, "
              f"test accuracy {metrics['test_accuracy']:.2%}, {metrics['images_per_second']:.0f} images/s", flush=True)
        self._record({"type": "epoch", **metrics})
        per_epoch = {name: metrics[name] for name in ("train_loss", "test_accuracy", "images_per_second")}
        if self.run is not None:
            for name, value in per_epoch.items():
                self.run.log(name, value)
        if self.mlflow is not None:
            self.mlflow.metrics(per_epoch, step=metrics["epoch"])

    def final(self, summary: dict) -> None:
        if not self.enabled:
            return
        final = {"final_test_accuracy": summary["test_accuracy"], "train_seconds": summary["train_seconds"]}
        if self.run is not None:
            for name, value in final.items():
                self.run.log(name, value)
        if self.mlflow is not None:
            self.mlflow.metrics(final, step=summary["epochs"])

    def _record(self, obj: dict) -> None:
        append_whole(self._file.fileno(), (json.dumps(obj) + "\n").encode(), self.path)  # whole line, or DiskFull

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


def read_metrics(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / contract.METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
