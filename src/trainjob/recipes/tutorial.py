"""The tutorial's recipe, exactly: Net, SGD(lr, momentum), cross-entropy, batch 4, 2 epochs, Normalize(0.5, 0.5)."""

import torch
from torch import nn

from trainjob.recipes.base import Recipe, normalize

# Below this many images per step, Net trains fastest on one thread, with PyTorch's plain convolution rather than
# oneDNN's, and with the fused SGD kernel: at batch 4 fixed per-call costs outweigh the arithmetic (see make bench).
SMALL_BATCH = 64


class TutorialRecipe(Recipe):
    name = "tutorial"
    arch = "net"
    defaults = {"learning_rate": 0.001, "momentum": 0.9, "epochs": 2, "batch_size": 4, "image_size": 32}
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    @classmethod
    def max_threads(cls, cfg):
        # A batch of 4 through Net is ~1 MFLOP per layer: splitting it across threads costs more in
        # synchronisation than it saves, and is many times slower when another process shares the cores.
        return 1 if cfg.batch_size < SMALL_BATCH else None

    def __init__(self, cfg, num_classes, image_size, steps_per_epoch, device, wrap=lambda m: m):
        super().__init__(cfg, num_classes, image_size, steps_per_epoch, device, wrap)
        self.criterion = nn.CrossEntropyLoss()
        self.small_batch = cfg.batch_size < SMALL_BATCH
        if self.small_batch:
            torch.backends.mkldnn.enabled = False  # process-wide: this process trains one recipe
        # Same update as SGD's default loop (d_p = grad + momentum * buf; p -= lr * d_p), in one kernel.
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum,
                                         fused=self.small_batch)

    def train_step(self, images, labels, generator):
        self.train_model.train()
        inputs = normalize(images, self.mean, self.std)
        self.optimizer.zero_grad()
        loss = self.criterion(self.train_model(inputs), labels)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
