#!/usr/bin/env python3
"""Sweep the tutorial's --learning_rate and --momentum on cpu-cluster as an Azure ML SDK v2 sweep job.

    make sweep-aml                                    # 20 random trials, 4 at a time, Bandit early termination
    make sweep-aml AML_ARGS="--sampling bayesian --max-trials 30"   # searches log10 of the learning rate
    make sweep-aml AML_ARGS="--sampling grid --grid-points 3"       # 3 x 3 values, every pair once
    make sweep-aml AML_ARGS="-- --recipe fast --epochs 10"   # trainer flags for every trial after --
    make sweep-aml DRY_RUN=1                          # write build/aml/sweep.yml (az ml job create --file); offline

Each trial runs the trainer with the sampled values and logs test_accuracy per epoch to MLflow; the sweep keeps the
trial with the highest (`make register-model AML_ARGS="--sweep NAME"` registers its model). Each sampling method
gets a search space Azure ML accepts for it (v2.SAMPLING_TAKES). Each trial's checkpoints go to <datastore>/
trainjob-checkpoints/<experiment>/<run key>/<job name>/<its sampled values>/, so a preempted trial resumes where it
stopped and no two trials share a folder. Exit codes: see common.py.
"""

from __future__ import annotations

import math
import sys

import common
import submit
import v2


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
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    if args.max_trials < 1:
        raise common.AmlError(f"--max-trials must be at least 1, got {args.max_trials}")
    if args.dry_run:
        sweep = v2.sweep_job(args, submit.v2_image(args))
        path = v2.write_sweep_yaml(sweep)
        policy = "no early termination (bayesian)" if args.sampling == "bayesian" else \
            f"Bandit slack {args.bandit_slack}"
        space = "; ".join(f"{k} {_described(d)}" for k, d in sweep.search_space.items())
        print(f"wrote {path} (offline, nothing sent): {args.sampling} sweep of {args.max_trials} trials, "
              f"{args.max_concurrent} at a time, on {args.compute}, experiment {sweep.experiment_name}; {space}; "
              f"maximise test_accuracy; {policy}; submit it with `az ml job create --file {path}`")
        return
    client = v2.ml_client(args)
    job = client.jobs.create_or_update(v2.sweep_job(args, submit.v2_image(args, client)))
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
