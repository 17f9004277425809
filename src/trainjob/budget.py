"""--time_budget: the arithmetic of training to a wall-time budget (no torch here; calibrate.py measures).

Just before step 0 a run with a budget has measured itself (calibrate.py): seconds a training step (the fast
recipe: at both image sizes), seconds to score a test image once, seconds to write a checkpoint, and how long the
process has already run (imports, data, feature extraction, the measurement). From those this module predicts what
each schedule the recipe could run costs, to the last file written:

    so far + steps/epoch x (small epochs x small step + other epochs x step)       training
           + (epochs - 1) x images scored after an epoch x image + final images x TTA passes x image   evaluation
           + (epochs + one per --checkpoint_interval) x checkpoint + OUTPUT_SECONDS  (model.pt, summary, plots)

and picks the best schedule whose prediction fits the budget less a margin (MARGIN of it, and MARGIN_SECONDS). The
lr schedule is then built for that length from step 0; a resumed run keeps the plan its checkpoint holds.
"""

import math
import os
import time
from dataclasses import asdict, dataclass

from trainjob import contract
from trainjob.errors import UserError

MARGIN = 0.03  # of the budget, left unplanned: a host's speed drifts by a few % within a run
MARGIN_SECONDS = 2.0  # ... and this much: process exit, the recipe built again after the measurement
OUTPUT_SECONDS = 3.5  # model.pt, summary.json and both plots (3.4 s measured for the fast recipe on the Zen 4 host)
TTA_PASSES = {None: 1, 0: 1, 1: 2, 2: 6}  # forward passes per image at each level of inference.tta_logits
TTA_NAMES = {0: "no TTA", 1: "flip TTA", 2: "flip + shift TTA"}
# The fast recipe's full-size steps while its whitening bias still learns (its first epochs) compute the first conv's
# input gradient too: about 8 % of such a step (recipes/fast.py), 9 % more than the frozen step that is measured.
WHITENING_EXTRA = 0.09

# --- what a schedule is worth (only their order matters: it trades epochs, small epochs and the final TTA) ---
# The fast recipe's test error (%) after E epochs with flip + shift TTA: 9.84 at its default 8 (the mean of 3 seeds on
# the Zen 4 host, docs/benchmarks.md), falling as E^-0.4 (the slope measured at 8 epochs: a third of an epoch more,
# 23 s, bought 0.15 points). Lower TTA levels lose TTA_LOSS points (measured on the 8-epoch model). Epochs on
# smaller images cost about 0.6 of a full-size one and, up to SMALL_SHARE of them (the default's 3 of 8, measured as
# good as none), count fully; each beyond counts SMALL_EXCESS_COST of an epoch less (not measured: 3 small epochs and
# 1 full scored above 4 full ones at the same point of a run, so the first ones cost little; the default's share is
# kept unless the time is short).
FAST_ERROR_AT_8, FAST_ERROR_EXPONENT = 9.84, 0.4
TTA_LOSS = {2: 0.0, 1: 0.2, 0: 1.36}
SMALL_SHARE, SMALL_EXCESS_COST = 3 / 8, 0.5
# The most epochs a budget gives each recipe: the tutorial's constant-lr Net stops gaining after about 8 epochs
# (real CIFAR-10, Zen 4 host: 61.3 % at 8, 59-61.5 % up to 15); the transfer head no more than its default (the head
# variants measured land within 0.4 points of each other); the fast recipe gains on with more epochs: 40 (about 45
# minutes on the Zen 4 host) is a cap, not a measured optimum.
MAX_EPOCHS = {"fast": 40, "tutorial": 8}


@dataclass(frozen=True)
class Plan:
    """The schedule a budget chose (the recipe's own for what it leaves out). Stored in every checkpoint."""

    epochs: int
    small_epochs: int = 0  # --recipe fast: the first epochs, trained on images downscaled by HYP.small_scale
    tta_final: int | None = None  # --recipe fast: the final evaluation's TTA level (inference.tta_logits)


@dataclass(frozen=True)
class Rates:
    """What calibrate.py measured on this machine, in seconds."""

    step: float  # one training step (the fast recipe: full-size images, the whitening layer frozen)
    small_step: float  # one step on the smaller images (the fast recipe's first epochs); = step for the others
    eval_image: float  # scoring one test image once (TTA multiplies it)
    checkpoint: float  # writing one checkpoint
    so_far: float  # since the process started, the measurement included
    measuring: float  # of which the measurement


@dataclass(frozen=True)
class Shape:
    """What one epoch of this run is, known before step 0 (per process under torchrun)."""

    recipe: str
    steps: int  # steps per epoch
    test_images: int  # scored by the final evaluation
    during_images: int  # scored after each earlier epoch
    default_epochs: int  # the recipe's
    checkpoint_interval: float  # --checkpoint_interval: mid-epoch checkpoints every this many seconds (0: none)
    whitening_epochs: int = 0  # the fast recipe's first epochs, while its whitening bias learns


def seconds(text) -> float:
    """A budget (TRAINJOB_TIME_BUDGET's text, or --time_budget's number) as seconds; ValueError says what is wrong."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError("is not a positive number of seconds")
    return value


def read_setting(cfg) -> None:
    """--time_budget or TRAINJOB_TIME_BUDGET (text: the environment's) as seconds, before the recipe's defaults fill
    --epochs: both at once are refused (one line), as is anything but a positive number."""
    value = cfg.time_budget
    if value is None:
        return
    name = contract.ENV_TIME_BUDGET if isinstance(value, str) else "--time_budget"
    try:
        cfg.time_budget = seconds(value)
    except ValueError:
        raise UserError(f"{name} must be a positive number of seconds, got {value!r}") from None
    if cfg.epochs is not None:
        raise UserError(f"--epochs and {name} both set how long the run trains: pass one of them (with a time budget "
                        "the run picks its epochs to fit)")
    # --recipe transfer: the budget picks the backbone and resolution too where the user named neither
    # (transfer_budget.py); not a Config field, so neither compared on resume nor written out.
    cfg.backbone_from_budget = cfg.backbone is None and cfg.image_size is None and cfg.weights is None


def predict(plan: Plan, rates: Rates, shape: Shape) -> dict[str, float]:
    """Seconds each phase of the run will take under plan, and their total: process start to the last file."""
    full = plan.epochs - plan.small_epochs
    learning = min(full, max(0, shape.whitening_epochs - plan.small_epochs))  # full-size, the whitening bias learning
    training = shape.steps * (plan.small_epochs * rates.small_step + (full + WHITENING_EXTRA * learning) * rates.step)
    scored = (plan.epochs - 1) * shape.during_images + TTA_PASSES[plan.tta_final] * shape.test_images
    saves = plan.epochs + (training // shape.checkpoint_interval if shape.checkpoint_interval else 0)
    phases = {"so_far": rates.so_far, "training": training, "evaluation": scored * rates.eval_image,
              "checkpoints": saves * rates.checkpoint, "outputs": OUTPUT_SECONDS}
    return {**{k: round(v, 2) for k, v in phases.items()}, "total": round(sum(phases.values()), 2)}


def fast_error(plan: Plan) -> float:
    """The fast recipe's expected test error (%) under plan, by the model above."""
    effective = plan.epochs - SMALL_EXCESS_COST * max(0.0, plan.small_epochs - SMALL_SHARE * plan.epochs)
    return FAST_ERROR_AT_8 * (effective / 8) ** -FAST_ERROR_EXPONENT + TTA_LOSS[plan.tta_final]


def plan_fast(shape: Shape) -> list[tuple[Plan, float]]:
    """--recipe fast: every epoch count up to MAX_EPOCHS, with any number of small epochs before the last, and any
    final TTA level; worth: minus the expected test error."""
    plans = [Plan(e, s, tta) for e in range(1, MAX_EPOCHS["fast"] + 1) for s in range(e) for tta in (0, 1, 2)]
    return [(p, -fast_error(p)) for p in plans]


def plan_tutorial(shape: Shape) -> list[tuple[Plan, float]]:
    """--recipe tutorial: its constant lr gains with every epoch up to MAX_EPOCHS: worth = epochs."""
    return [(Plan(e), e) for e in range(1, MAX_EPOCHS["tutorial"] + 1)]


def plan_transfer(shape: Shape) -> list[tuple[Plan, float]]:
    """--recipe transfer: the epochs of the head (with --finetune, of the last stage and the head; one step costs
    what the measurement found either way), up to the recipe's default; worth = epochs. The backbone and
    --image_size were fixed before the features were extracted (by the user, or by transfer_budget.py)."""
    return [(Plan(e), e) for e in range(1, shape.default_epochs + 1)]


PLANNERS = {"fast": plan_fast, "tutorial": plan_tutorial, "transfer": plan_transfer}


def choose(budget: float, rates: Rates, shape: Shape) -> Plan:
    """The best schedule that fits budget (of the equally good, the cheapest); a UserError naming the smallest budget
    that would do where not even the cheapest fits."""
    available = budget * (1 - MARGIN) - MARGIN_SECONDS
    scored = [(worth, -predict(plan, rates, shape)["total"], plan) for plan, worth in PLANNERS[shape.recipe](shape)]
    fitting = [s for s in scored if -s[1] <= available]
    if fitting:
        return max(fitting, key=lambda s: s[:2])[2]
    cheapest = max(scored, key=lambda s: s[1])
    needed = math.ceil((-cheapest[1] + MARGIN_SECONDS) / (1 - MARGIN))
    raise UserError(f"a time budget of {budget:g} s is too small for even one epoch here: {rates.so_far:.0f} s went to "
                    f"starting, the data and measuring, and one epoch with its evaluation and outputs needs about "
                    f"{-cheapest[1] - rates.so_far:.0f} s more: pass --time_budget {needed} or more")


def affordable_tta(planned: int | None, remaining: float, rates: Rates, test_images: int) -> int | None:
    """The final evaluation's TTA level when the run is behind its plan: the highest up to the planned one that still
    ends with the outputs written within the budget (remaining seconds of it), else none."""
    if planned is None:
        return None
    for level in range(planned, 0, -1):
        if TTA_PASSES[level] * test_images * rates.eval_image + OUTPUT_SECONDS <= remaining:
            return level
    return 0


def describe(budget: float, plan: Plan, rates: Rates, predicted: dict) -> str:
    """The one log line of the plan."""
    what = f"{plan.epochs} epoch{'s' if plan.epochs > 1 else ''}"
    if plan.small_epochs:
        what += f" ({plan.small_epochs} on smaller images)"
    if plan.tta_final is not None:
        what += f", final evaluation with {TTA_NAMES[plan.tta_final]}"
    speed = f"{rates.step:.3g} s a step" + (f" ({rates.small_step:.3g} s on smaller images)"
                                            if rates.small_step != rates.step else "")
    return (f"time budget {budget:g} s: measured {speed} and {rates.eval_image * 1000:.3g} ms a test image in "
            f"{rates.measuring:.1f} s; plan: {what}; predicted {predicted['total']:.0f} s (so far "
            f"{predicted['so_far']:.0f}, training {predicted['training']:.0f}, evaluation "
            f"{predicted['evaluation']:.0f}, checkpoints and outputs "
            f"{predicted['checkpoints'] + predicted['outputs']:.0f})")


def record(budget: float, plan: Plan, rates: Rates, predicted: dict) -> dict:
    """What a checkpoint keeps (plain values) and summary.json shows, less what was spent."""
    return {"seconds": budget, "plan": asdict(plan), "measured": asdict(rates), "predicted": predicted}


def saved_plan(state: dict | None) -> tuple[Plan, Rates, dict] | None:
    """The plan a checkpoint holds (None: its run had no budget)."""
    saved = (state or {}).get("time_budget")
    if not saved:
        return None
    return Plan(**saved["plan"]), Rates(**saved["measured"]), saved


def keep_saved_schedule(cfg, state: dict, default_epochs: int) -> None:
    """A resumed run keeps its checkpoint's schedule: the planned epochs, or with no plan the epochs it was started
    with where this run has a budget. An --epochs given now and differing is left for check_compatible to refuse."""
    saved = saved_plan(state)
    if saved:
        if cfg.time_budget is not None or cfg.epochs == default_epochs:
            cfg.epochs = saved[0].epochs
    elif cfg.time_budget is not None:
        cfg.epochs = int(state["config"].get("epochs", default_epochs))


def process_age() -> float | None:
    """Seconds since this process was started (exec), from /proc: the budget counts the interpreter's start and
    the imports before cli.run too (about 1 s). None where /proc does not say."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # starttime: clock ticks after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))


def process_started(fallback: float) -> float:
    """time.monotonic() at this process's start; fallback (cli.run's start) where /proc does not say."""
    age = process_age()
    return fallback if age is None else min(fallback, time.monotonic() - age)
