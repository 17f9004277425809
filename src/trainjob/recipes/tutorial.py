"""The tutorial's recipe, exactly: Net, SGD(lr, momentum), cross-entropy, batch 4, 2 epochs, Normalize(0.5, 0.5)."""

from dataclasses import dataclass

import torch
from torch import nn

from trainjob.preprocess import normalize
from trainjob.recipes.base import Recipe
from trainjob.recipes.net_sgd import NetSGD

# Below this many images per step, Net trains fastest on one thread, with PyTorch's plain convolution rather than
# oneDNN's, and with its step written out by hand (net_sgd): at batch 4 fixed per-call costs outweigh the arithmetic
# (see make bench).
SMALL_BATCH = 64


@dataclass(frozen=True)
class Hyperparameters:
    """The tutorial's own values (its train.py; --learning_rate and --momentum are what its run passes)."""

    learning_rate: float = 0.001  # SGD's lr
    momentum: float = 0.9  # SGD's momentum
    epochs: int = 2  # passes over the training set
    batch_size: int = 4  # images per step per process
    image_size: int = 32  # pixels per side: Net takes 32x32 only


class TutorialRecipe(Recipe):
    name = "tutorial"
    arch = "net"
    hyperparameters = Hyperparameters()
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    @classmethod
    def max_threads(cls, cfg):
        # A batch of 4 through Net is ~1 MFLOP per layer: splitting it across threads costs more in
        # synchronisation than it saves, and is many times slower when another process shares the cores.
        return 1 if cfg.batch_size < SMALL_BATCH else None

    def __init__(self, cfg, num_classes, image_size, steps_per_epoch, device, wrap=lambda m: m, plan=None):
        super().__init__(cfg, num_classes, image_size, steps_per_epoch, device, wrap, plan)
        small_batch = cfg.batch_size < SMALL_BATCH
        if small_batch:
            torch.backends.mkldnn.enabled = False  # process-wide: this process trains one recipe
        # THE FAST PATH. On the default run (CPU, one process, batch < SMALL_BATCH) the step is NetSGD's
        # (recipes/net_sgd.py): CrossEntropyLoss + SGD(lr, momentum) written out by hand, ~20 % faster at the
        # tutorial's batch of 4, held step for step to the autograd path below by tests/test_recipe_tutorial.py.
        # To try another loss or optimizer, change it below AND turn the fast path off here (fast_path = False):
        # editing only the torch.optim line changes DDP, GPU and large-batch runs, not the default one.
        self.fast_path = small_batch and device.type == "cpu" and self.train_model is self.model  # not under DDP
        if self.fast_path:
            self.sgd = NetSGD(self.model, cfg.learning_rate, cfg.momentum)
        else:  # autograd, so that DistributedDataParallel can average the gradients
            self.criterion = nn.CrossEntropyLoss()
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                                             fused=small_batch)

    def train_step(self, images, labels, generator, indices):
        inputs = normalize(images, self.mean, self.std)
        if self.fast_path:
            return self.sgd.step(inputs, labels)
        self.train_model.train()
        self.optimizer.zero_grad()
        loss = self.criterion(self.train_model(inputs), labels)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    @torch.inference_mode()
    def eval_logits(self, images):
        # Evaluation scores chunks of 1000 images, where oneDNN's convolution is the faster one. (Not
        # torch.backends.mkldnn.flags(): it also sets TF32 and warns about it on every call.)
        before, torch.backends.mkldnn.enabled = torch.backends.mkldnn.enabled, True
        try:
            return super().eval_logits(images)
        finally:
            torch.backends.mkldnn.enabled = before

    # Checkpoints hold the momentum buffers in parameter order whichever path trained, so a run started under
    # torchrun can resume in one process and the other way round.
    def state_dict(self):
        return {"model": self.model.state_dict(), "momentum_buffers": self._buffers()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        buffers = state["momentum_buffers"]
        if self.fast_path:
            self.sgd.momentum_buffers = None if buffers is None else [b.clone() for b in buffers]
        elif buffers is not None:
            for p, b in zip(self.model.parameters(), buffers, strict=True):
                self.optimizer.state[p]["momentum_buffer"] = b.clone()

    def _buffers(self) -> list[torch.Tensor] | None:
        if self.fast_path:
            return self.sgd.momentum_buffers
        state = [self.optimizer.state.get(p, {}).get("momentum_buffer") for p in self.model.parameters()]
        return None if any(b is None for b in state) else state
