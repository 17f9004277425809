"""`--recipe fast` on tiny generated tensors: it learns, its batched augmentation keeps labels with their images,
precision follows --precision, a checkpoint resumes bit for bit, and any image size and class count work."""

import io
from argparse import Namespace

import pytest
import torch
import torch.nn.functional as F

from trainjob import optim
from trainjob.augment import alternating_flips, augment
from trainjob.config import parse_args, recipe_defaults
from trainjob.models import build_model
from trainjob.recipes import RECIPES, fast
from trainjob.recipes.fast import FastRecipe
from trainjob.runtime import choose_precision

CPU = torch.device("cpu")
DEFAULTS = recipe_defaults(FastRecipe)  # what make_cfg, like the CLI, starts from


pytestmark = pytest.mark.usefixtures("two_threads")


@pytest.fixture
def small_net(monkeypatch):
    """A narrower net (8/32/32 channels) where only the training behaviour matters, to keep the tests quick."""
    monkeypatch.setitem(DEFAULTS, "width", 8)  # what make_cfg, like the CLI, starts from


def make_cfg(**overrides) -> Namespace:
    values = {**DEFAULTS, "precision": "fp32", "seed": 0, **overrides}
    return Namespace(**values)


def colour_task(n: int, num_classes: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, size, size) uint8 noise tinted by class: class k lifts channel k % 3, and k >= 3 is also brighter."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = torch.randint(0, 96, (n, 3, size, size), generator=g)
    images[torch.arange(n), labels % 3] += 120
    images += (labels >= 3).view(-1, 1, 1, 1) * 30
    return images.clamp(0, 255).to(torch.uint8), labels


def train(recipe: FastRecipe, images, labels, steps: int, batch: int, generator) -> list[float]:
    losses = []
    for step in range(steps):
        idx = torch.arange(step * batch, (step + 1) * batch) % len(labels)
        losses.append(float(recipe.train_step(images[idx], labels[idx], generator, idx)))
    return losses


def accuracy(recipe: FastRecipe, images, labels) -> float:
    return float((recipe.eval_logits(images).argmax(1) == labels).float().mean())


def test_registered_and_defaults_come_from_the_recipe():
    assert RECIPES["fast"] is FastRecipe
    cfg = parse_args(["--recipe", "fast", "--demo"], environ={})
    assert (cfg.model, cfg.batch_size, cfg.learning_rate, cfg.epochs) == (
        "fastnet", fast.HYP.batch_size, fast.HYP.learning_rate, fast.HYP.epochs)
    assert parse_args(["--recipe", "fast", "--demo", "--batch_size", "64"], environ={}).batch_size == 64
    assert cfg.width == fast.HYP.width and parse_args(["--demo"], environ={}).width is None  # the tutorial has none


def test_width_sets_the_channels_and_model_pt_records_them():
    recipe = FastRecipe(make_cfg(width=8, batch_size=8), 10, 16, steps_per_epoch=2, device=CPU)
    convs = [(g.conv1.out_channels, g.conv2.out_channels) for g in recipe.model.groups]
    assert convs == [(8, 8), (32, 32), (32, 32)]
    exported = recipe.export()
    assert exported["arch_kwargs"]["widths"] == [8, 32, 32]
    rebuilt = build_model(exported["arch"], **exported["arch_kwargs"])  # what predict does
    rebuilt.load_state_dict(exported["state_dict"])


def test_learns_an_easy_task_above_chance(small_net):
    images, labels = colour_task(384, 3, 16, seed=0)
    test_images, test_labels = colour_task(96, 3, 16, seed=1)
    cfg = make_cfg(learning_rate=0.2, batch_size=32, epochs=2)
    torch.manual_seed(0)
    recipe = FastRecipe(cfg, 3, 16, steps_per_epoch=12, device=CPU)
    losses = train(recipe, images, labels, 24, 32, torch.Generator().manual_seed(0))
    assert sum(losses[-4:]) < sum(losses[:4])
    assert accuracy(recipe, test_images, test_labels) > 0.8  # chance: 1/3


def test_augmentation_keeps_each_label_with_its_image():
    # Every image is one grey level that encodes its label: whatever shift or flip it gets, it stays that level.
    labels = torch.arange(64) % 10
    images = (labels * 20 + 10).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 32, 32).contiguous()
    out = augment(images, torch.Generator().manual_seed(0), translate=2, flips=torch.arange(len(images)) % 3 == 0)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal((out.float().mean((1, 2, 3)) - 10) / 20, labels.float())


def test_augmentation_matches_reflect_pad_crop_and_flip_per_image():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (16, 3, 24, 20), dtype=torch.uint8, generator=g)
    gen = torch.Generator().manual_seed(7)
    expected_draws = torch.Generator().manual_seed(7)
    flips = torch.rand(16, generator=g) < 0.5
    out = augment(images, gen, translate=2, flips=flips)
    shift = torch.randint(-2, 3, (2, 16), generator=expected_draws)  # the draws augment makes
    for i in range(16):
        dy, dx = int(shift[0, i]) + 2, int(shift[1, i]) + 2
        img = images[i].float().flip(2) if flips[i] else images[i].float()
        ref = F.pad(img[None], (2, 2, 2, 2), mode="reflect")[0, :, dy:dy + 24, dx:dx + 20]
        assert torch.equal(out[i].float(), ref), f"image {i}"
    assert flips.any() and (~flips).any() and (shift != 0).any()  # both paths were exercised


def test_alternating_flips_show_each_image_both_ways_over_two_epochs():
    indices = torch.arange(1000)
    first, second = alternating_flips(indices, 0, seed=0), alternating_flips(indices, 1, seed=0)
    assert torch.equal(second, ~first)
    assert torch.equal(alternating_flips(indices, 2, seed=0), first)
    assert 0.45 < first.float().mean() < 0.55  # a fair coin per image...
    assert torch.equal(alternating_flips(indices.flip(0), 0, seed=0), first.flip(0))  # ...tied to the image
    other_seed = alternating_flips(indices, 0, seed=1)
    assert 0.4 < (other_seed == first).float().mean() < 0.6  # and independent across seeds


def test_auto_precision_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    assert choose_precision("auto", CPU) == "bf16"
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_f": True})
    assert choose_precision("auto", CPU) == "fp32"
    assert choose_precision("bf16", CPU) == "bf16" and choose_precision("fp32", CPU) == "fp32"


def test_startup_note_says_why_fp32_was_chosen(monkeypatch, small_net):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True})
    auto = FastRecipe(make_cfg(precision="auto", batch_size=8), 10, 16, steps_per_epoch=2, device=CPU)
    assert auto.precision == "fp32" and "no native bf16" in auto.startup_note()
    assert "--width 32 --epochs 4" in auto.startup_note()  # what to do about it
    chosen = FastRecipe(make_cfg(precision="fp32", batch_size=8), 10, 16, steps_per_epoch=2, device=CPU)
    assert chosen.startup_note() == "precision: fp32"  # asked for: no excuse needed
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True})
    native = FastRecipe(make_cfg(precision="auto", batch_size=8), 10, 16, steps_per_epoch=2, device=CPU)
    assert native.startup_note() == "precision: bf16 autocast"


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_precision_flag_sets_the_arithmetic(small_net, precision, dtype):
    recipe = FastRecipe(make_cfg(precision=precision, batch_size=8), 10, 16, steps_per_epoch=2, device=CPU)
    seen = []
    recipe.model.groups[0].conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    images, labels = colour_task(8, 10, 16, seed=0)
    recipe.train_step(images, labels, torch.Generator().manual_seed(0), torch.arange(len(images)))
    recipe.eval_logits(images)
    assert set(seen) == {dtype}
    assert all(p.dtype == torch.float32 for p in recipe.model.parameters())  # master weights stay fp32
    assert recipe.describe()["precision"] == precision


def test_checkpoint_resumes_bit_for_bit():
    images, labels = colour_task(48, 4, 16, seed=0)
    cfg = make_cfg(learning_rate=0.3, batch_size=8, epochs=2)

    def fresh(seed):
        torch.manual_seed(seed)
        return FastRecipe(cfg, 4, 16, steps_per_epoch=3, device=CPU)

    straight, g = fresh(0), torch.Generator().manual_seed(5)
    expected = train(straight, images, labels, 6, 8, g)  # 6 steps: both optimisers, checkpointed after 2

    first, g = fresh(0), torch.Generator().manual_seed(5)
    losses = train(first, images, labels, 2, 8, g)
    buffer = io.BytesIO()
    torch.save({"recipe": first.state_dict(), "generator": g.get_state()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # what the engine's checkpoint loader allows
    resumed, g = fresh(123), torch.Generator()  # another initialisation: everything must come from the checkpoint
    resumed.load_state_dict(saved["recipe"])
    g.set_state(saved["generator"])
    for step in range(2, 6):
        idx = torch.arange(step * 8, (step + 1) * 8) % len(labels)
        losses.append(float(resumed.train_step(images[idx], labels[idx], g, idx)))

    assert losses == expected
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert torch.equal(straight.eval_logits(images), resumed.eval_logits(images))


@pytest.mark.parametrize("size, num_classes", [(48, 3), (24, 3), (8, 5)])
def test_any_image_size_and_class_count(small_net, size, num_classes):
    images, labels = colour_task(16, num_classes, size, seed=0)
    cfg = make_cfg(batch_size=8, epochs=3, image_size=size)
    recipe = FastRecipe(cfg, num_classes, size, steps_per_epoch=2, device=CPU)
    train(recipe, images, labels, 6, 8, torch.Generator().manual_seed(0))
    logits = recipe.eval_logits(images)
    assert logits.shape == (16, num_classes) and torch.isfinite(logits).all()
    # What predict gets: a plain model rebuilt by name, holding the trained weights.
    exported = recipe.export()
    model = build_model(exported["arch"], **exported["arch_kwargs"])
    model.load_state_dict(exported["state_dict"])
    for name, value in recipe.model.state_dict().items():
        assert torch.equal(exported["state_dict"][name], value), name
    x = fast.to_input(images)
    assert torch.allclose(model.eval()(x), recipe.model.eval()(x))


def test_trains_inside_distributed_data_parallel(small_net, tmp_path):
    dist = torch.distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        images, labels = colour_task(16, 3, 16, seed=0)
        recipe = FastRecipe(make_cfg(batch_size=8, epochs=1), 3, 16, steps_per_epoch=2, device=CPU,
                            wrap=torch.nn.parallel.DistributedDataParallel)
        losses = train(recipe, images, labels, 2, 8, torch.Generator().manual_seed(0))
        assert all(torch.isfinite(torch.tensor(losses)))
        assert recipe.whitened and recipe.model.whiten.weight.abs().sum() > 0
    finally:
        dist.destroy_process_group()


def test_epochs_before_the_last_score_a_strided_subset_and_the_last_all(small_net, monkeypatch, tmp_path):
    """Intermediate evaluations only show the trend: a subset spares the fast recipe ~4 s each on CIFAR-10."""
    import json

    from datagen import write_cifar_batches

    from trainjob import cli
    from trainjob.data import Split
    from trainjob.engine import strided

    monkeypatch.setenv("TRAINJOB_CACHE_DIR", "off")
    monkeypatch.setattr(FastRecipe, "eval_during", 7)
    write_cifar_batches(tmp_path / "data", n_train=60, n_test=30)
    out = tmp_path / "o"
    code = cli.run(["--recipe", "fast", "--data_path", str(tmp_path / "data"), "--output_dir", str(out),
                    "--epochs", "3", "--batch_size", "32", "--precision", "fp32", "--progress", "off"])
    assert code == 0
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "epoch"]
    assert [e["test_images"] for e in epochs] == [6, 6, 30]  # every 5th of 30 images, then all of them
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] == epochs[-1]["test_accuracy"] and summary["dataset"]["test_images"] == 30
    labels = torch.arange(30) % 10
    sub = strided(Split(torch.zeros(30, 3, 2, 2, dtype=torch.uint8), labels), 7)
    assert sub.labels.tolist() == labels[::5].tolist()  # spread over the whole set, not its first classes


def test_orthogonalize_brings_every_singular_value_near_one():
    g = torch.randn(48, 216, generator=torch.Generator().manual_seed(0)) * torch.logspace(-3, 1, 216)  # ill-conditioned
    for matrix in (g, g.T):  # wide and tall
        singular = torch.linalg.svdvals(optim.orthogonalize(matrix, 3, torch.float32))
        assert singular.min() > 0.3 and singular.max() < 1.3, singular
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 20  # the input's spread 20x and more


def test_muon_steps_the_filters_and_sgd_the_rest(small_net):
    recipe = FastRecipe(make_cfg(batch_size=8), 3, 16, steps_per_epoch=2, device=CPU)
    filters = {id(p) for p in recipe.muon.param_groups[0]["params"]}
    for name, p in recipe.model.named_parameters():
        if p.requires_grad:  # every trained parameter has exactly one optimiser: Muon for 4-D, SGD for the rest
            assert (id(p) in filters) == (p.ndim == 4), name
    assert sum(len(g["params"]) for g in recipe.sgd.param_groups) + len(filters) == sum(
        p.requires_grad for p in recipe.model.parameters())
    images, labels = colour_task(8, 3, 16, seed=0)
    train(recipe, images, labels, 1, 8, torch.Generator().manual_seed(0))
    for p in recipe.muon.param_groups[0]["params"]:  # renormalised to sqrt(out channels), then one lr-sized step
        assert abs(float(p.detach().norm()) - len(p) ** 0.5) < 2 * recipe.cfg.learning_rate * len(p) ** 0.5


def test_first_epochs_train_on_smaller_images(small_net):
    recipe = FastRecipe(make_cfg(batch_size=8, epochs=fast.HYP.small_epochs + 1), 3, 32, steps_per_epoch=1,
                        device=CPU)
    sizes = []
    recipe.model.whiten.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[-1]))
    images, labels = colour_task(8, 3, 32, seed=0)
    train(recipe, images, labels, fast.HYP.small_epochs + 1, 8, torch.Generator().manual_seed(0))
    assert sizes == [round(32 * fast.HYP.small_scale)] * fast.HYP.small_epochs + [32]
    recipe.eval_logits(images)
    assert sizes[-1] == 32  # evaluation always sees the full size
    short = FastRecipe(make_cfg(batch_size=8, epochs=2), 3, 32, steps_per_epoch=1, device=CPU)
    short.model.whiten.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[-1]))
    train(short, images, labels, 2, 8, torch.Generator().manual_seed(0))
    assert sizes[-2:] == [round(32 * fast.HYP.small_scale), 32]  # the last epoch is full size, however few there are
