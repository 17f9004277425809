"""--time_budget in a run: measure this machine before step 0, plan (budget.py), and keep to the plan to the end.

The measurement runs the recipe's real training step on the run's real first batches, and scores real test images,
on a copy of the recipe built only for it and then thrown away. job.py seeds torch again and builds the recipe that
trains, with the lr schedule made for the planned length from step 0: the run's weights are those of a run given
the same schedule without a budget (tests/test_time_budget.py holds it). What the measurement cost counts against
the budget like everything else since the process started. A resumed run keeps the plan its checkpoint holds and
measures nothing.
"""

import contextlib
import io
import itertools
import math
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainjob import budget
from trainjob.budget import Plan, Rates, Shape
from trainjob.data import Split
from trainjob.engine import EVAL_CHUNK, any_rank, epoch_order, evaluate, strided, take_batch
from trainjob.environment import Distributed
from trainjob.watchdog import beat

MEASURE_SECONDS = 0.5  # each kind of step is timed for at least this long (the tutorial's take a millisecond) ...
MEASURE_STEPS = 2  # ... and over at least this many steps, after one untimed step that builds the kernels


@dataclass
class BudgetRun:
    """A run's time budget: its plan, what it was planned from, and the clock it is held to."""

    plan: Plan
    rates: Rates
    record: dict  # budget.record: what every checkpoint keeps
    started: float  # time.monotonic() at this process's start
    test_images: int  # scored by this process at the final evaluation
    resumed: bool  # the plan came from a checkpoint: this process's clock is not the budget's
    d: Distributed

    def before_final_evaluation(self, recipe, log) -> None:
        """Behind the plan (a host that slowed down after the measurement), the final evaluation takes a cheaper TTA
        so that the outputs are still written within the budget. A resumed run keeps its plan: its clock restarted."""
        planned = self.plan.tta_final
        if self.resumed or planned is None:
            return
        remaining = self.record["seconds"] - (time.monotonic() - self.started)
        level = budget.affordable_tta(planned, remaining, self.rates, self.test_images)
        if self.d.enabled:  # every rank scores with the same TTA
            agreed = torch.tensor([level])
            dist.all_reduce(agreed, op=dist.ReduceOp.MIN)
            level = int(agreed.item())
        if level != planned:
            log(f"time budget: {remaining:.0f} s left, behind the plan: the final evaluation takes "
                f"{budget.TTA_NAMES[level]} instead of {budget.TTA_NAMES[planned]}", flush=True)
        recipe.tta_final = level

    def summary(self, pos, recipe) -> dict:
        """summary.json's time_budget: the budget, the plan, what it was planned from, and what was spent (this
        process's seconds since its start; the training and evaluation of a resumed run's earlier processes too)."""
        spent = {"before_training": None if self.resumed else self.rates.so_far,
                 "measuring": None if self.resumed else self.rates.measuring,
                 "training": round(pos.train_seconds, 2), "evaluation": round(pos.eval_seconds, 2),
                 "total": round(time.monotonic() - self.started, 2)}
        return {**self.record, "final_tta": getattr(recipe, "tta_final", None), "resumed": self.resumed,
                "spent": spent}


def plan_run(ctx, recipe_cls, data, steps: int, found, wrap, eval_threads: int | None) -> BudgetRun | None:
    """The run's BudgetRun: the plan its checkpoint holds, else (with --time_budget) one made from a measurement
    here, which also sets cfg.epochs; None for a run without a budget. Too small a budget is a UserError."""
    cfg, d = ctx.cfg, ctx.d
    started = budget.process_started(ctx.started)
    test_images = math.ceil(len(data.test) / d.world_size)
    saved = budget.saved_plan(found[0]) if found else None
    if saved:
        plan, rates, record = saved
        ctx.log(f"time budget {record['seconds']:g} s: the resumed run keeps its plan, {plan.epochs} epochs",
                flush=True)
        return BudgetRun(plan, rates, record, started, test_images, resumed=True, d=d)
    if cfg.time_budget is None:
        return None
    if found:
        ctx.log(f"time budget: the checkpoint was made without one; the resumed run keeps its {cfg.epochs} epochs",
                flush=True)
        return None
    rates = measure(ctx, recipe_cls, data, steps, wrap, eval_threads, started)
    hyp, during = recipe_cls.hyperparameters, len(strided(data.test, recipe_cls.eval_during))
    shape = Shape(cfg.recipe, steps, test_images, math.ceil(during / d.world_size), hyp.epochs,
                  cfg.checkpoint_interval, getattr(hyp, "whiten_bias_epochs", 0))
    plan = budget.choose(cfg.time_budget, rates, shape)
    cfg.epochs = plan.epochs
    predicted = budget.predict(plan, rates, shape)
    ctx.log(budget.describe(cfg.time_budget, plan, rates, predicted), flush=True)
    record = budget.record(cfg.time_budget, plan, rates, predicted)
    return BudgetRun(plan, rates, record, started, test_images, resumed=False, d=d)


def measure(ctx, recipe_cls, data, steps: int, wrap, eval_threads: int | None, started: float) -> Rates:
    """Time each kind of training step the recipe has (Recipe.timing_points), scoring test images and writing a
    checkpoint, on a throwaway recipe. Under torchrun every rank ends with the slowest rank's figures."""
    cfg, d = ctx.cfg, ctx.d
    began = time.monotonic()
    beat("measuring this machine for --time_budget")
    probe = recipe_cls(cfg, len(data.classes), cfg.image_size, steps, ctx.device, wrap=wrap)
    order = epoch_order(len(data.train), cfg.seed, 0, d)
    generator, taken = torch.Generator().manual_seed(cfg.seed), itertools.count()

    def train_one() -> None:  # the engine's step: the batch taken, the step, its loss read
        images, labels, idx = take_batch(data.train, order, next(taken) % steps, cfg.batch_size, ctx.device)
        probe.train_step(images, labels, generator, idx).item()
        beat()

    points = sorted(probe.timing_points().items(), key=lambda kind: kind[1])
    seconds = {}
    for i, (kind, step) in enumerate(points):
        end = points[i + 1][1] if i + 1 < len(points) else step + steps
        probe.skip_to(step)
        seconds[kind] = _timed(train_one, d, at_most=max(MEASURE_STEPS, end - step - 1))
    test = Split(data.test.inputs[:EVAL_CHUNK * d.world_size], data.test.labels[:EVAL_CHUNK * d.world_size])

    def score() -> None:
        evaluate(probe, test, len(data.classes), ctx.device, d, eval_threads)

    score()  # untimed: the scoring kernels are built here
    tick = time.perf_counter()
    score()
    eval_image = (time.perf_counter() - tick) / math.ceil(len(test) / d.world_size)
    checkpoint = _checkpoint_seconds({"recipe": probe.state_dict(), "generator": generator.get_state()},
                                     ctx.checkpoint_dir if d.is_main else None)
    measured = [seconds["step"], seconds.get("small_step", seconds["step"]), eval_image, checkpoint,
                time.monotonic() - started, time.monotonic() - began]
    return Rates(*_slowest(measured, d))


def _checkpoint_seconds(state: dict, folder) -> float:
    """Seconds to write a checkpoint like the run's: serialised, written and synced into the checkpoint folder (a
    datastore mount there can be slow), then removed. Only the main process writes checkpoints."""
    tick = time.perf_counter()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    if folder is not None:
        path = folder / ".time-budget-probe.pt"
        try:
            folder.mkdir(parents=True, exist_ok=True)  # where the first checkpoint would make it
            with open(path, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
        except OSError:
            pass  # a full or read-only folder is for the first real checkpoint to report
        finally:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
    return time.perf_counter() - tick


def _timed(train_one, d: Distributed, at_most: int) -> float:
    """Mean seconds of a step: one untimed, then at least MEASURE_STEPS and MEASURE_SECONDS (all ranks alike)."""
    train_one()
    n, tick = 0, time.perf_counter()
    while n < at_most:
        train_one()
        n += 1
        more = n < MEASURE_STEPS or time.perf_counter() - tick < MEASURE_SECONDS
        if not any_rank(more, d):  # under torchrun every rank takes the same number of steps
            break
    return (time.perf_counter() - tick) / n


def _slowest(values: list[float], d: Distributed) -> list[float]:
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()

