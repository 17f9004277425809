"""The tutorial recipe's hand-written step (recipes/net_sgd.py) against the reference it replaces: Net through
autograd, CrossEntropyLoss and torch.optim.SGD. Same weights, same losses, and checkpoints that cross paths."""

from argparse import Namespace

import pytest
import torch
from torch import nn

from trainjob.config import recipe_defaults
from trainjob.models import Net
from trainjob.recipes.net_sgd import NetSGD
from trainjob.recipes.tutorial import TutorialRecipe

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def batches(steps: int, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        # Shifted noise: some ReLUs and pooling windows are dead, some are not.
        yield torch.randn(batch, 3, 32, 32, generator=g) - 0.3, torch.randint(0, 10, (batch,), generator=g)


def reference_run(net: Net, data, lr: float, momentum: float) -> list[float]:
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("batch", [4, 3, 1])
def test_hand_written_step_matches_autograd_and_torch_sgd(batch):
    torch.manual_seed(0)
    reference, by_hand = Net(), Net()
    by_hand.load_state_dict(reference.state_dict())
    expected = reference_run(reference, batches(40, batch), lr=0.01, momentum=0.9)
    sgd = NetSGD(by_hand, lr=0.01, momentum=0.9)
    got = [sgd.step(x, y).item() for x, y in batches(40, batch)]

    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    for (name, a), b in zip(reference.named_parameters(), by_hand.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6), name
    assert not torch.equal(reference.conv1.weight, Net().conv1.weight)  # it did train


def recipe(by_hand: bool) -> TutorialRecipe:
    cfg = Namespace(**{**recipe_defaults(TutorialRecipe), "learning_rate": 0.01, "momentum": 0.9})
    torch.manual_seed(0)
    # A wrapper that is not the model itself is what DDP looks like: the recipe then keeps autograd.
    wrap = (lambda m: m) if by_hand else (lambda m: nn.Sequential(m))
    r = TutorialRecipe(cfg, 10, 32, 100, CPU, wrap=wrap)
    assert r.fast_path is by_hand
    return r


@pytest.mark.parametrize("first, second", [(True, False), (False, True)])
def test_checkpoints_cross_between_the_hand_written_and_autograd_paths(first, second):
    data = [(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), y) for _, y in batches(20, 4)]
    whole = recipe(first)
    for images, labels in data:
        whole.train_step(images, labels, None, None)

    half = recipe(first)
    for images, labels in data[:10]:
        half.train_step(images, labels, None, None)
    resumed = recipe(second)
    resumed.load_state_dict(half.state_dict())
    for images, labels in data[10:]:
        resumed.train_step(images, labels, None, None)

    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
