"""--recipe transfer under --time_budget: the backbone and resolution whose feature extraction fits the budget.

Feature extraction is nearly all of a transfer run (the head trains in seconds), and better backbones cost more per
image. Measured on photos20 (1,552 real photos, 20 classes; Zen 4 host, 2 cores; three seeds; docs/benchmarks.md):

    backbone @ px             test accuracy     network images/s   cold run
    Lite2 @ 224               97.1 97.7 98.1    144                17 s
    Lite2 @ 192               96.8 97.4 97.1    284
    Lite2 @ 224 --finetune    96.4 97.4 98.1    250 (trunk)        35 s
    Lite0 @ 256 (default)     95.8 96.4 95.8    131

So with a budget and no --backbone / --image_size of the user's, the run takes the first of CHOICES whose
extraction, predicted from the image count and the rate measured here and now (backbone_rates, ~1 s), fits its
share of the budget. The recipe's defaults are left as they are without a budget. --finetune stays off unless the
user passes it: it scored no better for twice the time. A resumed run takes the choice its checkpoint's config holds.
"""

import time
from pathlib import Path

from trainjob import budget
from trainjob.checkpoint import Checkpoints
from trainjob.data.detect import has_image_extension, walk_files
from trainjob.errors import UserError

CHOICES = (("efficientnet_lite2", 224), ("efficientnet_lite2", 192))
# A real extraction decodes on the same cores as the network: 117-124 images/s cold against the network's own 144-155
# (Lite2 at 224 px, Zen 4 host), so the network's rate times this.
DECODING_SHARE = 0.8
# Of the budget, what the rest of the run needs besides extraction: start-up and this measurement are counted as
# they happen; the head's epochs, the evaluation and the outputs take 5-10 s on photos20, planned by budget.py later.
REST_SECONDS = 15.0


def left_to_budget(cfg) -> bool:
    """Whether this run's backbone and resolution are the budget's to pick: a budget, and the user named neither
    (config marks it before the recipe's defaults fill them), nor a weights file for one."""
    return bool(cfg.time_budget) and getattr(cfg, "backbone_from_budget", False)


def count_images(data_path: str | None) -> int:
    """About how many images extraction will decode: the image files under a folder, the rows of a manifest (a file, or
    a folder's MLTable / labels file counts as its rows' images too); 0 for generated data (--demo)."""
    if not data_path:
        return 0
    path = Path(data_path)
    if path.is_file():
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    return sum(1 for entry in walk_files(str(path), lambda _path, _error: None) if has_image_extension(entry.name))


def choose(cfg, images: int, started: float, log, saved_config: dict | None = None) -> None:
    """Set cfg.backbone and cfg.image_size to the best of CHOICES that fits (the checkpoint's, when resuming)."""
    if saved_config:
        cfg.backbone, cfg.image_size = saved_config["backbone"], saved_config["image_size"]
        return
    from trainjob.backbone_rates import extraction_rate

    available = cfg.time_budget * (1 - budget.MARGIN) - REST_SECONDS
    needed = {}
    for backbone, size in CHOICES:
        rate = extraction_rate(backbone, size, finetune=bool(cfg.finetune), precision=cfg.precision)
        needed[backbone, size] = images / (rate * DECODING_SHARE)
        if time.monotonic() - started + needed[backbone, size] <= available:
            log(f"time budget {cfg.time_budget:g} s: {backbone} at {size} px, extracting {images} images in about "
                f"{needed[backbone, size]:.0f} s ({rate * DECODING_SHARE:.0f} images/s measured)", flush=True)
            cfg.backbone, cfg.image_size = backbone, size
            return
    fastest = min(needed.values())
    smallest = (time.monotonic() - started + fastest + REST_SECONDS) / (1 - budget.MARGIN)
    raise UserError(f"a time budget of {cfg.time_budget:g} s is too small to extract the features of {images} images "
                    f"(about {fastest:.0f} s with the fastest backbone here): pass --time_budget {smallest:.0f} or "
                    "more, or fewer images")


def choose_for_run(ctx) -> None:
    """choose() for this run: the checkpoint's pick on resume; rank 0's under torchrun, where every rank must extract
    with the same network."""
    cfg = ctx.cfg
    choice = [None]
    if ctx.d.is_main:
        found = Checkpoints(ctx.checkpoint_dir).find(cfg.resume)
        saved = found[0]["config"] if found else None  # with a budget or without: its backbone is the run's
        choose(cfg, count_images(None if cfg.demo else cfg.data_path), budget.process_started(ctx.started), ctx.log,
               saved)
        choice = [(cfg.backbone, cfg.image_size)]
    if ctx.d.enabled:
        import torch.distributed as dist

        dist.broadcast_object_list(choice, src=0)
        cfg.backbone, cfg.image_size = choice[0]
