"""--progress reaches decoding and feature extraction: lines, a bar, or nothing, as asked, on the main rank only."""

import re
import sys

import datagen
import loading
import pytest
import torch

from trainjob import progress
from trainjob.config import Config
from trainjob.context import RunContext
from trainjob.environment import Distributed, Environment
from trainjob.features import FeatureExtractor
from trainjob.recipes.base import Recipe
from trainjob.signals import StopRequest

DECODE_LINE = re.compile(r"decoding images: \d+/300 \(\d+/s, about \d+ s left\)")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """300 small images: more than decode.PARALLEL_MIN_FILES, so they are decoded in workers, chunk by chunk."""
    return datagen.write_image_folders(tmp_path_factory.mktemp("images"), per_class_train=80, per_class_test=20,
                                       size=(8, 8))


@pytest.fixture
def every_update(monkeypatch):
    monkeypatch.setattr(progress, "IMAGE_LINES_EVERY_S", 0.0)  # a line for every chunk, not one every 5 s


def on_terminal(monkeypatch, tty: bool) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)  # sys.stderr as captured now, in the test's body


@pytest.mark.parametrize("mode, tty, shown", [
    ("off", True, None), ("off", False, None), ("lines", True, "lines"), ("bar", False, "bar"),
    ("auto", True, "bar"), ("auto", False, "lines"),
])
def test_decoding_progress_honours_the_mode(images, every_update, monkeypatch, capsys, mode, tty, shown):
    on_terminal(monkeypatch, tty)
    ds, log = loading.load(images, progress=mode)
    assert len(ds.train) + len(ds.test) == 300
    lines = [line for line in log if line.startswith("decoding images: ")]
    out, err = capsys.readouterr()
    assert "decoding images" not in out
    if shown == "lines":
        assert len(lines) >= 2 and all(DECODE_LINE.fullmatch(line) for line in lines), lines
    else:
        assert lines == []
    assert ("decoding images:" in err) == (shown == "bar"), err[-500:]


@pytest.mark.parametrize("rank, shown", [(0, True), (1, False)])
def test_recipes_pass_progress_to_decoding_on_the_main_rank_only(images, every_update, capsys, tmp_path, rank,
                                                                 shown):
    cfg = Config(data_path=str(images), cache_dir="off", image_size=32, progress="bar")
    ctx = RunContext(cfg=cfg, env=Environment(), d=Distributed(rank=rank, world_size=2), device=torch.device("cpu"),
                     output_dir=tmp_path, checkpoint_dir=tmp_path / "checkpoints", stop=StopRequest(), started=0.0,
                     log=lambda *args, **kwargs: None)
    Recipe.load_data(ctx)
    assert ("decoding images:" in capsys.readouterr().err) == shown


@pytest.mark.parametrize("mode", ["off", "lines"])
def test_feature_extraction_progress_honours_the_mode(images, every_update, monkeypatch, capsys, tmp_path, mode):
    on_terminal(monkeypatch, True)
    log = []
    extractor = FeatureExtractor(lambda x: x.mean(dim=(2, 3)), lambda pixels: pixels.float(), image_size=16,
                                 settings="mean colour", chunk_dir=tmp_path, cache_dir=None, d=Distributed(),
                                 log=log.append, progress=mode)
    paths = sorted(str(p) for p in images.rglob("*.png"))
    rows, failures = extractor.for_files(paths, "the 300 images")
    assert rows.shape == (300, 3) and failures == {}
    lines = [line for line in log if line.startswith("extracting features: ")]
    if mode == "lines":  # 10 chunks of 32: a line after each but the last
        assert len(lines) == 9 and lines[0].startswith("extracting features: 32/300 ("), lines
    else:
        assert lines == []
    assert "extracting features" not in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["off", "lines"])
def test_decoding_beats_the_stall_watchdog_even_when_nothing_is_shown(images, mode):
    from trainjob import watchdog

    watchdog.beat("before decoding")
    before = watchdog._last_beat
    loading.load(images, progress=mode)
    assert watchdog._phase == "decoding images" and watchdog._last_beat > before
