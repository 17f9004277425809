#!/usr/bin/env python3
"""Sweep the tutorial's --learning_rate and --momentum on cpu-cluster as an Azure ML SDK v2 sweep job.

    make sweep-aml                                    # 20 random trials, 4 at a time, Bandit early termination
    make sweep-aml AML_ARGS="--sampling bayesian --max-trials 30"   # searches log10 of the learning rate
    make sweep-aml AML_ARGS="--sampling grid --grid-points 3"       # 3 x 3 values, every pair once
    make sweep-aml AML_ARGS="-- --recipe fast --epochs 10"   # trainer flags for every trial after --
    make sweep-aml AML_ARGS="--trial_budget 600 -- --recipe fast"   # each trial trains to 10 minutes, outputs written
    make sweep-aml DRY_RUN=1                          # write build/aml/sweep.yml (az ml job create --file); offline

Each trial runs the trainer with the sampled values and logs test_accuracy per epoch to MLflow; the sweep keeps the
trial with the highest (`make register-model AML_ARGS="--sweep NAME"` registers its model). Each sampling method
gets a search space Azure ML accepts for it (v2.SAMPLING_TAKES). Each trial's checkpoints go to <datastore>/
trainjob-checkpoints/<experiment>/<run key>/<job name>/<its sampled values>/, so a preempted trial resumes where it
stopped and no two trials share a folder. --trial_budget gives every trial the trainer's --time_budget (it measures
itself and picks its epochs to end, outputs written, within it) and sets the sweep's trial_timeout above it by what
a trial spends outside the trainer (TRIAL_STARTUP_SECONDS). Exit codes: see common.py.
"""

from __future__ import annotations

import math
import sys

import common
import submit
import v2

# What a trial spends outside the trainer's budget: a node pulling the image, mounting the data, starting the
# container; and the 3 % by which the trainer may overrun its budget on a host that slows down mid-run.
TRIAL_STARTUP_SECONDS = 600
TRIAL_OVERRUN = 0.03


def build_parser():
    p = submit.build_parser()
    p.description = __doc__.splitlines()[0]
    g = p.add_argument_group("sweep")
    g.add_argument("--sampling", default="random", choices=["random", "bayesian", "grid"],
                   help="random: independent trials, the learning rate log-uniform; bayesian: each trial learns "
                   "from the finished ones, over the learning rate's log10 (uniform: Bayesian takes no log-uniform), "
                   "with no early termination (Azure ML allows none); grid: every pair of --grid-points values")
    g.add_argument("--lr-min", type=float, default=1e-4, help="smallest learning rate (searched on a log scale)")
    g.add_argument("--lr-max", type=float, default=0.1, help="largest learning rate (searched on a log scale)")
    g.add_argument("--grid-points", type=int, default=4, help="grid: values of each hyperparameter (the learning "
                   "rates evenly spaced on a log scale); --max-trials caps how many of the pairs run")
    g.add_argument("--momentum-min", type=float, default=0.5, help="smallest momentum (uniform)")
    g.add_argument("--momentum-max", type=float, default=0.99, help="largest momentum (uniform)")
    g.add_argument("--max-trials", type=int, default=20, help="trials in all")
    g.add_argument("--max-concurrent", type=int, default=4, help="trials at once (at most the cluster's nodes)")
    g.add_argument("--max-nodes", type=int, default=common.MAX_NODES, help="the cluster's nodes (make compute)")
    g.add_argument("--bandit-slack", type=float, default=0.1,
                   help="Bandit policy: stop a trial whose test_accuracy falls more than this share below the best")
    g.add_argument("--timeout-minutes", type=int, default=600, help="the whole sweep's time limit")
    g.add_argument("--trial_budget", "--trial-budget", type=float, metavar="SECONDS",
                   help="each trial's wall-time budget: the trainer's --time_budget (not with --epochs after --); "
                   f"the trials' timeout is set {TRIAL_STARTUP_SECONDS} s and {TRIAL_OVERRUN:.0%} above it")
    return p


def trial_budget(args) -> int | None:
    """--trial_budget: passed to every trial as --time_budget; returns the trials' timeout in seconds (None: no
    budget, no timeout)."""
    if args.trial_budget is None:
        return None
    if not (math.isfinite(args.trial_budget) and args.trial_budget > 0):
        raise common.AmlError(f"--trial_budget must be a positive number of seconds, got {args.trial_budget}")
    given = [a for a in args.train_args if a.split("=")[0] in ("--epochs", "--time_budget")]
    if given:
        raise common.AmlError(f"--trial_budget sets how long each trial trains: leave {given[0].split('=')[0]} out "
                              "of the trainer flags after --")
    timeout = math.ceil(args.trial_budget * (1 + TRIAL_OVERRUN)) + TRIAL_STARTUP_SECONDS
    if timeout > args.timeout_minutes * 60:
        raise common.AmlError(f"--trial_budget {args.trial_budget:g} needs a trial timeout of {timeout} s, longer "
                              f"than the whole sweep's --timeout-minutes {args.timeout_minutes}: raise "
                              "--timeout-minutes or lower --trial_budget")
    args.train_args = [*args.train_args, "--time_budget", f"{args.trial_budget:g}"]
    return timeout


def budgeted_sweep(args, image: str):
    """v2.sweep_job's SweepJob, each trial given --trial_budget and the timeout above it."""
    timeout = trial_budget(args)
    sweep = v2.sweep_job(args, image)
    if timeout is not None:
        sweep.limits.trial_timeout = timeout
        sweep.tags = {**sweep.tags, "trainjob.trial_budget": f"{args.trial_budget:g}"}
    return sweep


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.max_trials < 1:
        raise common.AmlError(f"--max-trials must be at least 1, got {args.max_trials}")
    if args.dry_run:
        sweep = budgeted_sweep(args, submit.v2_image(args))
        path = v2.write_sweep_yaml(sweep)
        policy = "no early termination (bayesian)" if args.sampling == "bayesian" else \
            f"Bandit slack {args.bandit_slack}"
        space = "; ".join(f"{k} {_described(d)}" for k, d in sweep.search_space.items())
        budget = f"; each trial {args.trial_budget:g} s, timeout {sweep.limits.trial_timeout} s" \
            if args.trial_budget else ""
        print(f"wrote {path} (offline, nothing sent): {args.sampling} sweep of {args.max_trials} trials, "
              f"{args.max_concurrent} at a time, on {args.compute}, experiment {sweep.experiment_name}; {space}; "
              f"maximise test_accuracy; {policy}{budget}; submit it with `az ml job create --file {path}`")
        return
    client = v2.ml_client(args)
    job = client.jobs.create_or_update(budgeted_sweep(args, submit.v2_image(args, client)))
    print(f"submitted sweep {job.name} (experiment {args.experiment})")
    print(f"Studio: {job.studio_url}", flush=True)
    if args.wait:
        v2.wait(client, job)


def _described(distribution) -> str:
    if distribution.type == "choice":
        return f"one of {distribution.values}"
    if distribution.type == "loguniform":  # its bounds are natural logs
        return f"log-uniform {math.exp(distribution.min_value):.4g} to {math.exp(distribution.max_value):.4g}"
    return f"{distribution.type} {distribution.min_value:.4g} to {distribution.max_value:.4g}"


if __name__ == "__main__":
    sys.exit(common.run_main(main))
