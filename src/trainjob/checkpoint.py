"""Resumable training state: written atomically to --checkpoint_dir (<output_dir>/checkpoints/), newest and previous
kept.

A checkpoint is a plain dict of tensors and plain values, loaded with torch.load(weights_only=True), so a checkpoint
file can never run code. A truncated or corrupt newest checkpoint (SIGKILL mid-write, full disk) is detected by
failing to load and the previous one is used instead.
"""

import pickle
import zipfile
from pathlib import Path

import torch

from trainjob import contract
from trainjob.atomic import move, save_torch
from trainjob.config import NOT_COMPARED, Config, recipe_defaults
from trainjob.errors import UserError
from trainjob.recipes import RECIPES
from trainjob.watchdog import beat

FORMAT = "trainjob-checkpoint-3"  # 2: the tutorial recipe keeps its momentum buffers as a list; 3: fast uses Muon
LATEST = "latest.pt"
PREVIOUS = "previous.pt"
_CORRUPT = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError, TypeError)


class Checkpoints:
    def __init__(self, folder: Path):
        self.dir = Path(folder)

    @property
    def latest(self) -> Path:
        return self.dir / LATEST

    def save(self, state: dict) -> Path:
        """Write state as the newest checkpoint; the one it replaces becomes the previous good one. On a full disk
        (DiskFull) latest.pt is then absent and previous.pt the last good one, which find() takes: renamed first, it
        needs no space, where writing the new one beside both would need room for three checkpoints."""
        beat()
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.latest.exists():
            move(self.latest, self.dir / PREVIOUS)  # where a blob mount refuses it, a copy: latest.pt goes once whole
        save_torch({"format": FORMAT, **state}, self.latest)  # atomic: a crash here leaves previous.pt intact
        return self.latest

    def find(self, resume: str) -> tuple[dict, Path] | None:
        """The checkpoint --resume asks for: auto = newest valid one here, never = none, else that file."""
        if resume == "never":
            return None
        if resume != "auto":
            path = Path(resume)
            if not path.is_file():
                raise UserError(f"--resume {resume}: no such checkpoint file; expected a .pt file written by trainjob "
                                f"under <output_dir>/{contract.CHECKPOINT_DIR}/, or --resume auto / never")
            state = load(path)
            if state is None:
                raise UserError(f"--resume {resume}: the file is not a readable trainjob checkpoint (truncated, "
                                "corrupt or from another trainjob version); use --resume auto to take the newest "
                                "valid one, or --resume never")
            return state, path
        for path in (self.latest, self.dir / PREVIOUS):
            if path.is_file():
                state = load(path)
                if state is not None:
                    return state, path
                print(f"warning: checkpoint {path} is truncated, corrupt or from another trainjob version; trying the "
                      "previous one", flush=True)
        return None


def load(path: Path) -> dict | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except _CORRUPT:
        return None
    return state if isinstance(state, dict) and state.get("format") == FORMAT else None


def check_compatible(state: dict, path: Path, config: dict, classes: list[str]) -> None:
    """A checkpoint resumes only the same training: same hyperparameters, same classes."""
    saved = _saved_config(state)
    for key, value in config.items():
        if key in NOT_COMPARED or saved.get(key) == value:
            continue
        raise UserError(f"checkpoint {path} was made with {_flag(key, saved.get(key))} but this run has "
                        f"{_flag(key, value)}: rerun with the same settings to resume, or pass --resume never "
                        "(or another --output_dir) to start over")
    if list(state["classes"]) != list(classes):
        raise UserError(f"checkpoint {path} was trained on classes {state['classes']} but the data now has "
                        f"{classes}: point --data_path at the same dataset to resume, or pass --resume never")


def _saved_config(state: dict) -> dict:
    """The checkpoint's config. A setting added since it was written (--width, --finetune) takes its default, the
    recipe's where the recipe has one: that is what the older version trained with."""
    saved = dict(state["config"])
    recipe = RECIPES.get(saved.get("recipe"))
    for key, value in (recipe_defaults(recipe).items() if recipe else ()):
        saved.setdefault(key, value)
    for key, value in Config().to_dict().items():
        saved.setdefault(key, value)
    return saved


def _flag(key: str, value) -> str:
    if isinstance(value, bool):
        return f"--{key}" if value else f"no --{key}"
    return f"--{key} {value}"
