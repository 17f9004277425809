"""--time_budget: the plan grows with the budget and fits it, a run ends within its budget with summary.json saying
what it planned and spent, a budget too small for one epoch is one line naming the smallest that would do, the
measurement leaves no trace in the weights, and a resumed run keeps its plan, bit for bit.

Timing figures belong to the benchmarks (make bench-fast ARGS="-- --time_budget 600"); here the tolerances are
generous, since the test machine is shared."""

import json
import math
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from cli_runner import REPO, assert_user_error, cli_env, run_torchrun, run_train, summary, weights
from datagen import write_cifar_batches

from trainjob import budget
from trainjob.budget import MARGIN, MARGIN_SECONDS, Plan, Rates, Shape, choose, predict
from trainjob.config import parse_args
from trainjob.errors import UserError

# The fast recipe's default run on the real CIFAR-10, Zen 4 host (docs/benchmarks.md): 1.5 s a full-size step, 0.9 s
# at 24 px, 5.8 s to score the 10,000 test images once; 6 s to start, about 8 s to measure.
ZEN4 = Rates(step=1.5, small_step=0.9, eval_image=0.00058, checkpoint=0.1, so_far=14.0, measuring=8.0)
CIFAR_FAST = Shape("fast", steps=50, test_images=10000, during_images=2000, default_epochs=8, checkpoint_interval=300,
                   whitening_epochs=3)
TUTORIAL = Shape("tutorial", steps=12500, test_images=10000, during_images=10000, default_epochs=2,
                 checkpoint_interval=300)
TUTORIAL_RATES = Rates(step=0.0006, small_step=0.0006, eval_image=0.00004, checkpoint=0.01, so_far=4.0, measuring=1.0)
TRANSFER = Shape("transfer", steps=20, test_images=300, during_images=300, default_epochs=15, checkpoint_interval=300)
TRANSFER_RATES = Rates(step=0.3, small_step=0.3, eval_image=0.001, checkpoint=0.05, so_far=40.0, measuring=2.0)
BUDGET_LINE = re.compile(r"--time_budget (\d+) or more")


# --- the arithmetic (budget.py) -------------------------------------------------------------------------------------
@pytest.mark.parametrize("rates, shape", [(ZEN4, CIFAR_FAST), (TUTORIAL_RATES, TUTORIAL),
                                          (TRANSFER_RATES, TRANSFER)], ids=["fast", "tutorial", "transfer"])
def test_the_plan_grows_with_the_budget_and_its_prediction_fits(rates, shape):
    one_epoch = predict(Plan(1, tta_final=0 if shape.recipe == "fast" else None), rates, shape)["total"]
    smallest = (one_epoch + MARGIN_SECONDS) / (1 - MARGIN)
    budgets = [smallest * k for k in (1.01, 1.5, 2, 3, 5, 10, 40)]
    plans = [choose(b, rates, shape) for b in budgets]
    epochs = [p.epochs for p in plans]
    assert epochs == sorted(epochs) and epochs[-1] > epochs[0], epochs
    for b, p in zip(budgets, plans, strict=True):
        assert predict(p, rates, shape)["total"] <= b * (1 - MARGIN) - MARGIN_SECONDS
    assert epochs[-1] == budget.MAX_EPOCHS.get(shape.recipe, shape.default_epochs), "a budget never buys more epochs "\
        "than help"


def test_on_the_zen4_host_600_s_is_the_measured_default_and_300_s_half_of_it():
    assert choose(600, ZEN4, CIFAR_FAST) == Plan(epochs=8, small_epochs=3, tta_final=2)  # 90.16 %, 570 s measured
    short = choose(300, ZEN4, CIFAR_FAST)
    assert 3 <= short.epochs < 8 and short.small_epochs < short.epochs
    assert choose(300, Rates(*[v / 2 for v in (1.5, 0.9, 0.00058, 0.1)], 10.0, 4.0), CIFAR_FAST).epochs > 8, \
        "a host twice as fast trains longer in the same budget"


def test_a_budget_too_small_for_one_epoch_names_the_smallest_that_would_do():
    with pytest.raises(UserError) as raised:
        choose(100, ZEN4, CIFAR_FAST)
    message = str(raised.value)
    assert "too small for even one epoch" in message and "\n" not in message
    needed = int(BUDGET_LINE.search(message)[1])
    assert choose(needed, ZEN4, CIFAR_FAST).epochs == 1
    with pytest.raises(UserError):
        choose(needed - 1, ZEN4, CIFAR_FAST)


def test_tta_passes_are_the_forward_passes_tta_logits_makes():
    from trainjob.inference import tta_logits

    calls = []

    def model(x):
        calls.append(x.shape)
        return x.mean((2, 3))

    for level in (0, 1, 2):
        calls.clear()
        tta_logits(model, torch.zeros(2, 3, 8, 8), level)
        assert len(calls) == budget.TTA_PASSES[level], level


def test_behind_the_plan_the_final_evaluation_takes_a_cheaper_tta():
    test_images = 10000  # 5.8 s a pass at ZEN4's rate: flip + shift TTA 35 s, flip 12 s, none 6 s (+ outputs)
    assert budget.affordable_tta(2, 60, ZEN4, test_images) == 2
    assert budget.affordable_tta(2, 20, ZEN4, test_images) == 1
    assert budget.affordable_tta(2, 5, ZEN4, test_images) == 0
    assert budget.affordable_tta(None, 5, ZEN4, test_images) is None


def test_the_budget_comes_from_the_flag_or_the_environment_and_not_with_epochs():
    assert parse_args(["--demo", "--time_budget", "90"], environ={}).time_budget == 90.0
    env = {"TRAINJOB_TIME_BUDGET": "120"}
    assert parse_args(["--demo"], environ=env).time_budget == 120.0
    assert parse_args(["--demo", "--time_budget", "30"], environ=env).time_budget == 30.0  # the flag wins
    assert parse_args(["--demo"], environ={}).time_budget is None
    for argv, environ, phrase in [
            (["--time_budget", "-5"], {}, "--time_budget must be a positive number of seconds, got -5.0"),
            (["--time_budget", "nan"], {}, "--time_budget must be a positive number of seconds"),
            ([], {"TRAINJOB_TIME_BUDGET": "soon"}, "TRAINJOB_TIME_BUDGET must be a positive number of seconds"),
            (["--time_budget", "60", "--epochs", "3"], {}, "--epochs and --time_budget both set how long"),
            (["--epochs", "3"], env, "--epochs and TRAINJOB_TIME_BUDGET both set how long")]:
        with pytest.raises(UserError, match=re.escape(phrase)):
            parse_args(["--demo", *argv], environ=environ)


# --- real runs of the CLI -------------------------------------------------------------------------------------------
RUN = ["--demo", "--progress", "off", "--log_interval", "500"]


def timed(*args, env=None):
    started = time.monotonic()
    result = run_train(*args, env=env)
    return result, time.monotonic() - started


def test_a_budgeted_run_ends_within_it_says_its_plan_once_and_the_measurement_leaves_no_trace(tmp_path):
    out, plain = tmp_path / "budget", tmp_path / "plain"
    result, wall = timed(*RUN, "--output_dir", out, env=cli_env(TRAINJOB_TIME_BUDGET="60"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert wall <= 60 * 1.25, f"{wall:.1f} s for a budget of 60 s"
    [line] = [ln for ln in result.stdout.splitlines() if ln.startswith("time budget")]
    s = summary(out)
    record = s["time_budget"]
    assert record["seconds"] == 60 and record["resumed"] is False
    assert record["plan"]["epochs"] == s["epochs"] == len(s["history"]) >= 1
    assert f"plan: {s['epochs']} epoch" in line
    assert set(record["spent"]) >= {"before_training", "measuring", "training", "evaluation", "total"}
    assert record["spent"]["measuring"] < record["spent"]["before_training"] < record["spent"]["total"] <= wall
    assert record["predicted"]["total"] <= 60
    # The measurement trained a throwaway copy: the weights are those of the same epochs without a budget.
    again = run_train(*RUN, "--output_dir", plain, "--epochs", str(s["epochs"]))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "time budget" not in again.stdout and summary(plain)["time_budget"] is None
    want, got = weights(plain), weights(out)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_too_small_a_budget_is_exit_2_naming_the_budget_that_would_do(tmp_path):
    result = run_train(*RUN, "--output_dir", tmp_path / "o", "--time_budget", "1")
    line = assert_user_error(result, "a time budget of 1 s is too small for even one epoch here", "or more")
    assert "failure.txt" not in line and (tmp_path / "o" / "failure.txt").read_text().startswith("error: a time")
    needed = int(BUDGET_LINE.search(line)[1])
    # The same run given that budget trains (with room for a shared machine's slower moments).
    enough = run_train(*RUN, "--output_dir", tmp_path / "o", "--time_budget", str(math.ceil(needed * 1.5)))
    assert enough.returncode == 0, enough.stderr[-2000:]
    assert summary(tmp_path / "o")["epochs"] >= 1


def test_a_bad_environment_variable_is_one_line_naming_it(tmp_path):
    result = run_train(*RUN, "--output_dir", tmp_path / "o", env=cli_env(TRAINJOB_TIME_BUDGET="ten minutes"))
    assert_user_error(result, "TRAINJOB_TIME_BUDGET", "positive number of seconds")


def test_transfer_plans_its_fine_tuning_after_the_extraction_and_trains_what_it_would_without(tmp_path):
    from datagen import write_image_folders

    data = write_image_folders(tmp_path / "photos", classes=("cat", "dog", "ship"), per_class_train=8,
                               per_class_test=4, size=[(48, 40)])
    flags = ["--recipe", "transfer", "--finetune", "--image_size", "64", "--data_path", data, "--progress", "off"]
    budgeted = run_train(*flags, "--output_dir", tmp_path / "budget", "--time_budget", "300")
    assert budgeted.returncode == 0, budgeted.stderr[-2000:]
    record = summary(tmp_path / "budget")["time_budget"]
    # Ample time: the recipe's own 15 epochs, no more; the extraction came first and counts.
    assert record["plan"]["epochs"] == 15 and record["spent"]["before_training"] > record["spent"]["measuring"]
    plain = run_train(*flags, "--output_dir", tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr[-2000:]
    want, got = weights(tmp_path / "plain"), weights(tmp_path / "budget")
    assert all(torch.equal(got[k], want[k]) for k in want)


# --- the fast recipe: the plan kept across a stop, bit for bit ------------------------------------------------------
# A run whose measurement is replaced by given rates (the ones a real run measured): it plans exactly as that run did,
# without building the throwaway copy, so it is the control that shows the copy left nothing behind.
GIVEN_RATES = """import json, sys
from trainjob import budget, calibrate
rates = budget.Rates(**json.loads(sys.argv.pop(1)))
calibrate.measure = lambda *args, **kwargs: rates
from trainjob.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_fast_recipe_sigterm_then_the_same_command_keeps_the_plan_and_ends_bit_identical(tmp_path):
    data = write_cifar_batches(tmp_path / "data", n_train=200, n_test=100)
    flags = ["--recipe", "fast", "--width", "8", "--data_path", data, "--time_budget", "40", "--progress", "off"]
    measured = run_train(*flags, "--output_dir", tmp_path / "measured")
    assert measured.returncode == 0, measured.stderr[-2000:]
    record = summary(tmp_path / "measured")["time_budget"]
    plan = record["plan"]
    assert plan["epochs"] >= 4, plan  # room to stop in the middle
    given = [sys.executable, "-c", GIVEN_RATES, json.dumps(record["measured"])]

    control = run_train(*flags, "--output_dir", tmp_path / "control", command=given)
    assert control.returncode == 0, control.stderr[-2000:]
    assert summary(tmp_path / "control")["time_budget"]["plan"] == plan
    want = weights(tmp_path / "control")
    assert all(torch.equal(weights(tmp_path / "measured")[k], want[k]) for k in want), "the measurement left a trace"

    stopped = tmp_path / "stopped"
    proc = subprocess.Popen([*given, *map(str, flags), "--output_dir", str(stopped)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch 2:"):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    resumed = run_train(*flags, "--output_dir", stopped)  # measures for real if it does not keep the plan
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "the resumed run keeps its plan" in resumed.stdout
    assert "measured" not in resumed.stdout
    s = summary(stopped)
    assert s["time_budget"]["plan"] == plan and s["time_budget"]["resumed"] is True
    assert (s["epochs"], s["small_epochs"]) == (plan["epochs"], plan["small_epochs"])
    got = weights(stopped)
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.slow
def test_two_processes_under_torchrun_plan_alike(tmp_path):
    data = write_cifar_batches(tmp_path / "data", n_train=400, n_test=100)
    out = tmp_path / "o"
    result = run_torchrun("--data_path", data, "--output_dir", out, "--time_budget", "90", "--progress", "off",
                          "--log_interval", "25")
    assert result.returncode == 0, result.stderr[-3000:]
    s = summary(out)
    assert s["world_size"] == 2 and s["time_budget"]["plan"]["epochs"] == s["epochs"] == len(s["history"])
    assert result.stdout.count("time budget 90 s: measured") == 1  # only rank 0 logs


# --- make bench-precision --profile: what oneDNN ran, read from its own verbose output ------------------------------
def test_bench_precision_reads_onednns_isa_kernels_and_convolution_flops_from_its_verbose_output():
    sys.path.insert(0, str(REPO / "scripts"))
    from bench import bench_precision

    x = torch.randn(8, 16, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    conv = torch.nn.Conv2d(16, 32, 3, padding=1).to(memory_format=torch.channels_last)

    def step():
        conv(x).sum().backward()

    step()  # oneDNN's kernels built
    info, rows = bench_precision.onednn_rows(step)
    convolutions = {direction: (calls, flop) for (kind, direction, _), (calls, ms, flop) in rows.items()
                    if kind == "convolution"}
    if not convolutions:
        pytest.skip(f"this torch runs convolutions outside oneDNN: {sorted(rows)}")
    assert any(line.startswith("cpu,isa:") for line in info), info
    forward = 2 * 8 * 32 * 16 * 16 * 16 * 9  # multiply-adds x 2 of one 3x3 convolution of 16 to 32 channels
    assert convolutions["forward_training"] == (1, forward)
    assert {flop for _, flop in convolutions.values()} == {forward}  # each direction does the forward's work


# --- transfer: the budget picks the backbone and resolution the user left out ----------------------------------------
def test_transfer_with_a_budget_and_no_backbone_extracts_with_the_budgets_pick(tmp_path):
    from datagen import write_image_folders

    data = write_image_folders(tmp_path / "photos", classes=("cat", "dog"), per_class_train=6, per_class_test=3,
                               size=[(48, 40)])
    result = run_train("--recipe", "transfer", "--data_path", data, "--progress", "off", "--time_budget", "300",
                       "--output_dir", tmp_path / "o")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "time budget 300 s: efficientnet_lite2 at 224 px, extracting 18 images" in result.stdout
    config = summary(tmp_path / "o")["config"]
    assert (config["backbone"], config["image_size"]) == ("efficientnet_lite2", 224)
    named = run_train("--recipe", "transfer", "--data_path", data, "--progress", "off", "--time_budget", "300",
                      "--image_size", "64", "--output_dir", tmp_path / "named")
    assert named.returncode == 0, named.stderr[-2000:]
    assert summary(tmp_path / "named")["config"]["backbone"] == "efficientnet_lite0"  # the user's size: no pick


def test_transfer_extraction_too_long_for_the_budget_names_the_budget_that_would_do():
    import time
    from types import SimpleNamespace

    from trainjob import transfer_budget
    from trainjob.errors import UserError

    cfg = SimpleNamespace(time_budget=60.0, finetune=False, precision="auto", backbone=None, image_size=None)
    with pytest.raises(UserError, match=r"too small to extract the features of 10000000 images.*--time_budget \d+"):
        transfer_budget.choose(cfg, 10_000_000, time.monotonic(), print)
    transfer_budget.choose(cfg, 10_000_000, time.monotonic(), print,
                           saved_config={"backbone": "efficientnet_lite2", "image_size": 192})
    assert (cfg.backbone, cfg.image_size) == ("efficientnet_lite2", 192)  # a resumed run keeps its checkpoint's
