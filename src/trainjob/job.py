"""One training job from config to results: runtime, data, recipe, resume, the loop, and what is written at the end."""

import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.distributed as dist

import trainjob
from trainjob import budget, contract, mlflow_log, runtime, transfer_budget
from trainjob.atomic import save_torch
from trainjob.calibrate import plan_run
from trainjob.checkpoint import Checkpoints, check_compatible
from trainjob.config import Config
from trainjob.context import RunContext
from trainjob.engine import Trainer, evaluate, steps_per_epoch
from trainjob.environment import Distributed, Environment
from trainjob.errors import DataError, Stopped
from trainjob.metrics import accuracy, per_class_accuracy
from trainjob.outputs import checkpoint_dir, clear_failure, output_dir_lock, prepare_checkpoint_dir, prepare_output_dir
from trainjob.progress import Progress
from trainjob.recipes import get_recipe
from trainjob.report import plot_confusion, plot_training_curves, write_summary
from trainjob.signals import StopRequest
from trainjob.text import say
from trainjob.tracking import Tracker, azure_run, read_metrics
from trainjob.version import code_version
from trainjob.watchdog import beat


def train(cfg: Config, env: Environment, stop: StopRequest, started: float) -> dict | None:
    """Run the job; returns the summary on the main process (None on other ranks)."""
    d = env.distributed()
    device = runtime.init_distributed(d, runtime.choose_device(cfg.device))
    output_dir = prepare_output_dir(cfg.output_dir)
    try:
        with output_dir_lock(output_dir, enabled=d.is_main):
            folder = prepare_checkpoint_dir(cfg, output_dir) if d.is_main else checkpoint_dir(cfg, output_dir)
            ctx = RunContext(cfg=cfg, env=env, d=d, device=device, output_dir=output_dir, checkpoint_dir=folder,
                             stop=stop, started=started, log=say if d.is_main else _silent)
            return _train(ctx)
    finally:
        if d.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _silent(*args, **kwargs) -> None:
    """The log of ranks other than 0: they train silently."""


def _train(ctx: RunContext) -> dict | None:
    """Load, resume, fit, write: each step a function below."""
    cfg, d, log = ctx.cfg, ctx.d, ctx.log
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    recipe_cls = get_recipe(cfg.recipe)
    threads = runtime.set_threads(cfg.num_threads, d, recipe_cls.max_threads(cfg))
    eval_threads = runtime.thread_share(cfg.num_threads, d)
    log(f"trainjob {trainjob.__version__}: recipe {cfg.recipe}, device {ctx.device}, {threads} threads"
        + (f", process {d.rank} of {d.world_size}" if d.enabled else ""), flush=True)

    data, steps = _load_data(ctx, recipe_cls)
    checkpoints = Checkpoints(ctx.checkpoint_dir)
    found = _find_resume(ctx, checkpoints, data.classes, recipe_cls.hyperparameters.epochs)
    # --time_budget: measured here on a throwaway recipe (or the checkpoint's plan), which sets cfg.epochs
    budgeted = plan_run(ctx, recipe_cls, data, steps, found, _ddp_wrapper(d, ctx.device), eval_threads)

    recipe = _recipe(ctx, recipe_cls, data, steps, budgeted)
    run, mlflow = _trackers(ctx, resumed=found[0] if found else None)
    tracker = Tracker(ctx.output_dir, enabled=d.is_main, run=run, mlflow=mlflow,
                      truncate_at=found[0]["metrics_offset"] if found else None,
                      saved=found[0].get("metrics") if found else None)

    def save_checkpoint(state: dict):
        if not d.is_main:
            return None
        return checkpoints.save({**state, "config": cfg.to_dict(), "classes": data.classes,
                                 "mlflow_run_id": mlflow.run_id if mlflow else None,
                                 "time_budget": budgeted.record if budgeted else None})

    trainer = Trainer(recipe, data, ctx, tracker, Progress(ctx.progress), save_checkpoint, eval_threads)
    if budgeted:
        trainer.before_final_evaluation = lambda: budgeted.before_final_evaluation(recipe, log)
    if found:
        trainer.load_state(found[0])
        log(f"resuming from {found[1]}: epoch {trainer.pos.epoch + 1}, step {trainer.pos.step}", flush=True)
    try:
        history = trainer.fit()
        # The last epoch was just scored; a rerun of a finished job (nothing left to train) scores it here.
        confusion = trainer.confusion if trainer.confusion is not None else evaluate(
            recipe, data.test, len(data.classes), ctx.device, d, eval_threads)
    except BaseException as e:
        if mlflow:  # a stop that a rerun resumes is KILLED, as MLflow names a run ended from outside
            mlflow.end("KILLED" if isinstance(e, (Stopped, KeyboardInterrupt)) else "FAILED")
        raise
    finally:
        tracker.close()
    if not d.is_main:
        return None

    beat("writing results")
    summary = _summary(ctx, data, recipe, trainer, history, confusion, started_at, threads, found, run, mlflow)
    _write_results(ctx.output_dir, cfg, data, recipe, summary, confusion, tracker, mlflow,
                   (lambda: budgeted.summary(trainer.pos, recipe)) if budgeted else None)
    say(f"Finished Training: test accuracy {summary['test_accuracy']:.2%} in {summary['train_seconds']:.1f} s "
        f"of training; results in {ctx.output_dir}", flush=True)
    return summary


def _recipe(ctx: RunContext, recipe_cls, data, steps: int, budgeted):
    """The recipe that trains: its weights from --seed alone (whatever a time budget's measurement ran before), its
    schedule the budget's plan where there is one."""
    torch.manual_seed(ctx.cfg.seed)  # model initialisation
    recipe = recipe_cls(ctx.cfg, len(data.classes), ctx.cfg.image_size, steps, ctx.device,
                        wrap=_ddp_wrapper(ctx.d, ctx.device), plan=budgeted.plan if budgeted else None)
    note = recipe.startup_note()
    if note:
        ctx.log(note, flush=True)
    return recipe


def _load_data(ctx: RunContext, recipe_cls):
    """The recipe's dataset and the steps per epoch it gives; too few images for one step is a DataError."""
    cfg, d = ctx.cfg, ctx.d
    if cfg.recipe == "transfer" and transfer_budget.left_to_budget(cfg):
        transfer_budget.choose_for_run(ctx)  # before the features are extracted with them
    data = recipe_cls.load_data(ctx)
    steps = steps_per_epoch(len(data.train), cfg.batch_size, recipe_cls.drop_last, d)
    if steps == 0:
        raise DataError(f"only {len(data.train)} training images for --batch_size {cfg.batch_size} on "
                        f"{d.world_size} process(es): add images or lower --batch_size")
    if data.synthetic:
        ctx.log("NOTE: training on SYNTHETIC data (--demo): the accuracy says nothing about real images", flush=True)
    return data, steps


def _find_resume(ctx: RunContext, checkpoints: Checkpoints, classes, default_epochs: int) -> tuple | None:
    """(checkpoint state, its path) to resume from, or None; the same on every rank, checked against this run
    (whose epochs become the checkpoint's where a time budget planned them, or plans them)."""
    found = checkpoints.find(ctx.cfg.resume) if ctx.d.is_main else None
    if ctx.d.enabled:  # on several nodes only rank 0's output folder holds the checkpoints: every rank resumes from it
        shared = [found]
        dist.broadcast_object_list(shared, src=0)
        found = shared[0]
    if found:
        budget.keep_saved_schedule(ctx.cfg, found[0], default_epochs)
        check_compatible(found[0], found[1], ctx.cfg.to_dict(), classes)
    return found


def _summary(ctx: RunContext, data, recipe, trainer: Trainer, history: list[dict], confusion, started_at: str,
             threads: int, found, run, mlflow) -> dict:
    """summary.json's content (contract.SUMMARY_FILE)."""
    cfg = ctx.cfg
    return {
        "test_accuracy": accuracy(confusion),
        "per_class_accuracy": per_class_accuracy(confusion, data.classes),
        "train_loss": history[-1]["train_loss"],
        "train_seconds": trainer.pos.train_seconds,
        "wall_seconds": time.monotonic() - ctx.started,
        "images_per_second": len(data.train) * len(history) / max(trainer.pos.train_seconds, 1e-9),
        "epochs": cfg.epochs,
        "history": history,
        "dataset": data.describe(),
        "config": cfg.to_dict(),
        **recipe.describe(),
        "device": str(ctx.device),
        "threads": threads,
        "world_size": ctx.d.world_size,
        "resumed_from": str(found[1]) if found else None,
        "azureml_run_id": getattr(run, "id", None),
        "mlflow": mlflow.describe() if mlflow else None,
        "confusion_matrix": confusion.tolist(),
        "versions": {"trainjob": trainjob.__version__, "code_version": code_version(),
                     "torch": torch.__version__, "python": platform.python_version()},
        "started_at": started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _write_results(output_dir: Path, cfg: Config, data, recipe, summary: dict, confusion, tracker: Tracker,
                   mlflow, time_budget=None) -> None:
    """model.pt, both plots, summary.json, the final metrics and MLflow artifacts; then no failure.txt is left.
    time_budget: what summary.json's time_budget says, asked for once the rest is written (it counts the writing)."""
    save_torch({**recipe.export(), "classes": list(data.classes), "config": cfg.to_dict(),
                "image_size": cfg.image_size, "recipe": cfg.recipe, "test_accuracy": summary["test_accuracy"],
                "code_version": summary["versions"]["code_version"]},
               output_dir / contract.MODEL_FILE)
    plot_training_curves(output_dir, read_metrics(output_dir))
    plot_confusion(output_dir, confusion, data.classes)
    summary["time_budget"] = time_budget() if time_budget else None
    write_summary(output_dir, summary)
    tracker.final(summary)
    if mlflow:
        mlflow.artifacts([output_dir / name for name in (contract.MODEL_FILE, contract.SUMMARY_FILE,
                                                         contract.METRICS_FILE, contract.CURVES_FILE,
                                                         contract.CONFUSION_FILE)])
        mlflow.end("FINISHED")
        if mlflow.problem:  # summary.json says what did not reach the server
            write_summary(output_dir, {**summary, "mlflow": mlflow.describe()})
    clear_failure(output_dir)


def _trackers(ctx: RunContext, resumed: dict | None):
    """(the SDK v1 Run or None, the MlflowRun or None) that --tracking asks for; only the main process tracks."""
    cfg, environ = ctx.cfg, ctx.env.variables
    if not ctx.d.is_main or cfg.tracking == "none":
        return None, None
    run = azure_run() if ctx.tracks_azureml else None
    mlflow = None
    if mlflow_log.wanted(cfg.tracking, environ, in_azureml_v1_run=run is not None):
        mlflow = mlflow_log.MlflowRun.start(cfg, environ, resumed_run_id=(resumed or {}).get("mlflow_run_id"),
                                            log=ctx.log)
    return run, mlflow


def _ddp_wrapper(d: Distributed, device):
    if not d.enabled:
        return lambda model: model
    from torch.nn.parallel import DistributedDataParallel

    return lambda model: DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
