"""The training loop: seeded data order, sharding across processes, logging, checkpoints, stop and divergence checks.

Batches are taken by indexing one uint8 tensor with a permutation; nothing is done per image. All randomness comes
from (seed, epoch) or from generators whose state goes into every checkpoint, so a run stopped at any step and
resumed ends with the same weights as one that never stopped.
"""

import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from trainjob import runtime
from trainjob.data import Dataset, Split
from trainjob.environment import Distributed
from trainjob.errors import DivergedError
from trainjob.metrics import accuracy, confusion_matrix
from trainjob.recipes.base import Recipe
from trainjob.watchdog import beat

EVAL_CHUNK = 1000  # images scored per forward pass at evaluation


@dataclass
class Position:
    """Where training stands; all of it goes into a checkpoint."""

    epoch: int = 0  # current epoch, 0-based
    step: int = 0  # next step within the epoch
    global_step: int = 0
    running_loss: float = 0.0  # sum since the last loss line (the tutorial's running_loss)
    epoch_loss: float = 0.0  # sum over this epoch's steps
    epoch_seconds: float = 0.0  # training time spent in this epoch so far (excludes evaluation)
    train_seconds: float = 0.0  # training time of finished epochs
    eval_seconds: float = 0.0  # time spent scoring the finished epochs (the final evaluation included)
    history: list[dict] = field(default_factory=list)  # one dict per finished epoch

    def state(self) -> dict:
        return dict(vars(self))


def epoch_order(num_images: int, seed: int, epoch: int, d: Distributed) -> torch.Tensor:
    """This process's images for an epoch: a seeded permutation, cut into equal disjoint shards, one per rank."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(num_images, generator=g)
    per_rank = num_images // d.world_size  # equal shards keep every rank on the same step count
    return order[d.rank * per_rank:(d.rank + 1) * per_rank]


def take_batch(split: Split, order: torch.Tensor, step: int, batch_size: int, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, labels, their indices) of one step of an epoch whose order is given; calibrate.py times the same."""
    idx = order[step * batch_size:(step + 1) * batch_size]
    # index_select: at 4 images per step, a quarter of the cost of images[idx]
    images = split.inputs.index_select(0, idx).to(device, non_blocking=True)
    return images, split.labels.index_select(0, idx).to(device, non_blocking=True), idx


def steps_per_epoch(num_images: int, batch_size: int, drop_last: bool, d: Distributed) -> int:
    per_rank = num_images // d.world_size
    return per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)


@torch.inference_mode()
def evaluate(recipe: Recipe, split: Split, num_classes: int, device: torch.device, d: Distributed,
             threads: int | None = None, stop_requested=None) -> torch.Tensor | None:
    """Confusion matrix (num_classes, num_classes) int64, rows = true class; each rank scores a shard.

    threads: torch threads while scoring. Chunks of EVAL_CHUNK images keep every core busy even where a recipe
    trains on fewer (the tutorial's batch of 4 trains on one). stop_requested: checked between chunks (one process
    only); None is returned when it says stop, so a SIGTERM need not wait for a whole evaluation (30-65 s with the
    fast recipe's final TTA)."""
    with runtime.torch_threads(threads):
        confusion = _confusion(recipe, split, num_classes, device, d, stop_requested)
    if d.enabled:
        dist.all_reduce(confusion)
    return confusion


def _confusion(recipe: Recipe, split: Split, num_classes: int, device: torch.device, d: Distributed,
               stop_requested=None) -> torch.Tensor | None:
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    n = len(split)
    lo, hi = n * d.rank // d.world_size, n * (d.rank + 1) // d.world_size
    for start in range(lo, hi, EVAL_CHUNK):
        if stop_requested is not None and stop_requested():
            return None
        beat("evaluating")
        stop = min(start + EVAL_CHUNK, hi)
        predicted = recipe.eval_logits(split.inputs[start:stop].to(device)).argmax(1).cpu()
        truth = split.labels[start:stop]
        confusion += confusion_matrix(truth, predicted, num_classes)
    return confusion


def any_rank(flag: bool, d: Distributed) -> bool:
    """Whether any rank says so (every rank gets the same answer: an all-reduce under torchrun)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class Trainer:
    def __init__(self, recipe: Recipe, data: Dataset, ctx, tracker, progress, save_checkpoint,
                 eval_threads: int | None = None):
        """ctx: the run's context.RunContext (config, device, processes, stop request, start time)."""
        self.recipe, self.data, self.cfg, self.device, self.d = recipe, data, ctx.cfg, ctx.device, ctx.d
        self.eval_threads = eval_threads
        self.tracker, self.progress, self.stop = tracker, progress, ctx.stop
        self.save_checkpoint = save_checkpoint  # callable(state: dict) -> path | None (None on ranks > 0)
        self.steps = steps_per_epoch(len(data.train), self.cfg.batch_size, recipe.drop_last, self.d)
        self.generator = torch.Generator().manual_seed(self.cfg.seed)  # the recipe's randomness (augmentation)
        self.pos = Position()
        self.last_checkpoint = None
        self.confusion: torch.Tensor | None = None  # of the last evaluation this process ran
        self.started = ctx.started  # time.monotonic() at process start: wall_seconds counts data loading too
        self.before_final_evaluation = None  # called before the last epoch is scored (a time budget's last word)

    # --- checkpoint state ---
    def state(self) -> dict:
        return {"position": self.pos.state(), "recipe": self.recipe.state_dict(),
                "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "metrics_offset": self.tracker.offset, "metrics": self.tracker.written()}

    def load_state(self, state: dict) -> None:
        self.pos = Position(**state["position"])
        self.recipe.load_state_dict(state["recipe"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    def checkpoint(self) -> None:
        self.last_checkpoint = self.save_checkpoint(self.state()) or self.last_checkpoint

    # --- the loop ---
    def fit(self) -> list[dict]:
        cfg, pos = self.cfg, self.pos
        self.stop.defer()
        last_save = time.monotonic()
        while pos.epoch < cfg.epochs:
            order = epoch_order(len(self.data.train), cfg.seed, pos.epoch, self.d)
            self.progress.start(pos.epoch, cfg.epochs, self.steps, pos.step)
            beat(f"training epoch {pos.epoch + 1}")
            tick = time.perf_counter()
            while pos.step < self.steps:
                images, labels, idx = take_batch(self.data.train, order, pos.step, cfg.batch_size, self.device)
                loss = self.recipe.train_step(images, labels, self.generator, idx).item()
                if not math.isfinite(loss):
                    raise DivergedError(
                        f"the training loss became {loss} at epoch {pos.epoch + 1}, step {pos.step + 1}: lower "
                        f"--learning_rate (now {cfg.learning_rate}); the last good checkpoint is kept"
                        + (f" at {self.last_checkpoint}" if self.last_checkpoint else ""))
                beat()
                pos.step += 1
                pos.global_step += 1
                pos.running_loss += loss
                pos.epoch_loss += loss
                if pos.step % cfg.log_interval == 0:
                    self.tracker.loss(pos.epoch, pos.step, pos.global_step, pos.running_loss / cfg.log_interval)
                    pos.running_loss = 0.0
                self.progress.update(pos.step)
                if self._should_stop():
                    pos.epoch_seconds += time.perf_counter() - tick
                    self.progress.close()
                    self.checkpoint()
                    raise self.stop.stopped(str(self.last_checkpoint) if self.last_checkpoint else None)
                if cfg.checkpoint_interval and time.monotonic() - last_save >= cfg.checkpoint_interval:
                    pos.epoch_seconds += time.perf_counter() - tick
                    self.checkpoint()
                    tick, last_save = time.perf_counter(), time.monotonic()
            pos.epoch_seconds += time.perf_counter() - tick
            self.progress.close()
            if not self._end_epoch():  # stopped while scoring: this epoch's steps are all in the checkpoint
                self.checkpoint()
                raise self.stop.stopped(str(self.last_checkpoint) if self.last_checkpoint else None)
            self.checkpoint()
            last_save = time.monotonic()
        # From here a signal stops at once: the last checkpoint holds every epoch.
        self.stop.immediate(f"resumable from {self.last_checkpoint}" if self.last_checkpoint else None)
        return pos.history

    def _should_stop(self) -> bool:
        """Every rank must stop at the same step, or the others would wait forever in their next all-reduce."""
        return any_rank(self.stop.requested, self.d)

    def _end_epoch(self) -> bool:
        """Score the epoch and record it; False when a stop came first (a single process checks between chunks)."""
        pos = self.pos
        stop_requested = None if self.d.enabled else (lambda: self.stop.requested)
        last = pos.epoch + 1 == self.cfg.epochs
        if last and self.before_final_evaluation is not None:
            self.before_final_evaluation()
        test = self.data.test if last else strided(self.data.test, self.recipe.eval_during)
        tick = time.perf_counter()
        confusion = evaluate(self.recipe, test, len(self.data.classes), self.device, self.d, self.eval_threads,
                             stop_requested)
        if confusion is None:
            return False
        pos.eval_seconds += time.perf_counter() - tick
        self.confusion = confusion
        images = self.steps * self.cfg.batch_size * self.d.world_size
        pos.train_seconds += pos.epoch_seconds
        metrics = {
            "epoch": pos.epoch + 1,
            "steps_per_epoch": self.steps,
            "train_loss": pos.epoch_loss / max(1, self.steps),
            "test_accuracy": accuracy(confusion),
            "test_images": len(test),  # fewer than the test set before the last epoch where the recipe says so
            "images_per_second": min(images, len(self.data.train)) / max(pos.epoch_seconds, 1e-9),
            "epoch_seconds": pos.epoch_seconds,
            "elapsed_seconds": pos.train_seconds,  # training time so far, this and earlier epochs
            "wall_seconds": time.monotonic() - self.started,  # since this process started, data loading included
        }
        pos.history.append(metrics)
        self.tracker.epoch(metrics)
        pos.epoch += 1
        pos.step = 0
        pos.running_loss = pos.epoch_loss = pos.epoch_seconds = 0.0
        return True


def strided(split: Split, at_most: int | None) -> Split:
    """At most at_most images of split, evenly strided (test sets are often sorted by class: a prefix would not do)."""
    if at_most is None or len(split) <= at_most:
        return split
    step = math.ceil(len(split) / at_most)
    return Split(split.inputs[::step], split.labels[::step])
