"""Metrics, params and results to MLflow: a user's tracking server, or the job's own run inside Azure ML SDK v2.

MLflow is a guest here: an unreachable or failing server costs one warning and a line in summary.json, never the
training. The client talks to the server directly (MlflowClient), not through mlflow's global active run, so nothing
else in the process is affected, and a run resumed from a checkpoint continues the MLflow run it started.

Inside an Azure ML job, MLFLOW_TRACKING_URI is an azureml:// URI (resolved by the azureml-mlflow plugin) and
MLFLOW_RUN_ID names the job's run: metrics land on the job, the way the v2 Studio shows them.
"""

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from trainjob import contract

DEFAULT_EXPERIMENT = "trainjob"
# A tracking call fails within ~20 s when the server is gone, instead of mlflow's default of 7 retries of 120 s each.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def wanted(tracking: str, environ: Mapping[str, str], in_azureml_v1_run: bool = False) -> bool:
    """Whether --tracking sends metrics to MLflow. auto: where MLFLOW_TRACKING_URI is set, except inside an SDK v1
    run, where Azure ML sets it too and Run.log already records every metric on that same run."""
    if tracking in ("mlflow", "both"):
        return True
    if tracking != "auto" or not environ.get(contract.ENV_MLFLOW_URI):
        return False
    return not (in_azureml_v1_run and environ[contract.ENV_MLFLOW_URI].startswith("azureml:"))


def shown(uri: str) -> str:
    """The tracking URI without any user:password it carries, for logs and summary.json."""
    parts = urlsplit(uri)
    if parts.username or parts.password:
        return urlunsplit(parts._replace(netloc=f"***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")))
    return uri


class MlflowRun:
    """One MLflow run. Every call after the first failure is a no-op; `status` says what happened, for summary.json."""

    def __init__(self, uri: str, run_id: str | None, experiment: str, log=print):
        self.uri, self.run_id, self.experiment, self._log = uri, run_id, experiment, log
        self.client = None
        self.problem: str | None = None
        self.owns_run = False  # False inside an Azure ML job: the service starts and ends the job's run

    @classmethod
    def start(cls, cfg, environ: Mapping[str, str], resumed_run_id: str | None = None,
              log=print) -> "MlflowRun | None":
        """Connect, then join Azure ML's run (MLFLOW_RUN_ID), the checkpoint's run, or create one. None when the
        tracking URI is missing; an object with `problem` set when MLflow cannot be used."""
        uri = environ.get(contract.ENV_MLFLOW_URI)
        if not uri:
            log(f"warning: --tracking {cfg.tracking} but {contract.ENV_MLFLOW_URI} is not set: metrics go to "
                f"{contract.METRICS_FILE} only", flush=True)
            return None
        job_run = environ.get(contract.ENV_MLFLOW_RUN_ID)
        run = cls(uri, job_run or resumed_run_id, environ.get(contract.ENV_MLFLOW_EXPERIMENT) or DEFAULT_EXPERIMENT,
                  log)
        run._guard("connect", lambda: run._connect(cfg, joined_job=bool(job_run)))
        return run

    def _connect(self, cfg, joined_job: bool) -> None:
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)  # read by mlflow at each request; a user's own setting wins
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri)
        if self.run_id:
            have = self.client.get_run(self.run_id).data.params  # also proves the server answers
            if not joined_job:
                self.client.update_run(self.run_id, status="RUNNING")  # resumed after a stop
                self.owns_run = True
        else:
            experiment = self.client.get_experiment_by_name(self.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
            name = Path(cfg.output_dir).resolve().name
            tags = {"trainjob.recipe": cfg.recipe, "trainjob.output_dir": str(Path(cfg.output_dir).resolve())}
            self.run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            self.owns_run, have = True, {}
        # MLflow refuses to change a logged param; a resumed run (another node, another mount path) keeps its own.
        params = [Param(k, str(v)) for k, v in sorted(cfg.to_dict().items()) if v is not None and k not in have]
        for i in range(0, len(params), 100):  # the server takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self._log(f"MLflow: logging to run {self.run_id} at {shown(self.uri)}", flush=True)

    def metrics(self, values: dict, step: int) -> None:
        def send():
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            batch = [Metric(k, float(v), now, step) for k, v in values.items() if math.isfinite(float(v))]
            self.client.log_batch(self.run_id, metrics=batch)

        self._guard("log metrics", send)

    def artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            if path.is_file():
                self._guard(f"upload {path.name}", lambda p=path: self.client.log_artifact(self.run_id, str(p)))

    def end(self, status: str) -> None:
        """FINISHED, FAILED or KILLED (a stop that a rerun resumes). A job's run is ended by Azure ML."""
        if self.owns_run:
            self._guard("end the run", lambda: self.client.set_terminated(self.run_id, status=status))

    def _guard(self, what: str, call) -> None:
        if self.problem is not None:
            return
        try:
            call()
        except ImportError as e:
            self.problem = f"MLflow is not installed ({e.name} missing): pip install 'trainjob[azure]'"
            self._log(f"warning: {self.problem}; metrics go to {contract.METRICS_FILE} only", flush=True)
        except Exception as e:  # noqa: BLE001 - any failure of the tracking server must not stop training
            self.problem = f"could not {what} at {shown(self.uri)}: {_reason(e)}"
            self._log(f"warning: MLflow: {self.problem}; training goes on, metrics go to {contract.METRICS_FILE} "
                      "only", flush=True)

    def describe(self) -> dict:
        """summary.json's one line about MLflow."""
        if self.problem:
            return {"tracking_uri": shown(self.uri), "run_id": self.run_id, "status": f"not logged: {self.problem}"}
        return {"tracking_uri": shown(self.uri), "run_id": self.run_id, "status": "logged"}


def _reason(e: BaseException) -> str:
    """The root cause in a few words: mlflow wraps a refused connection in four layers of retry messages."""
    seen, cause = set(), e
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
        cause = cause.__cause__ or cause.__context__
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
