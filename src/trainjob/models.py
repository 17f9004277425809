"""Model architectures by name, so model.pt can name its architecture and `predict` can rebuild it."""

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    """The tutorial's CNN (Azure ML "use your own data", after the PyTorch CIFAR-10 tutorial), for 32x32 RGB."""

    def __init__(self, num_classes: int = 10, image_size: int = 32):
        super().__init__()
        if image_size != 32:
            raise ValueError("Net takes 32x32 images")
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) float -> (B, num_classes)
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


ARCHITECTURES: dict[str, type[nn.Module]] = {"net": Net}


def build_model(arch: str, **kwargs) -> nn.Module:
    return ARCHITECTURES[arch](**kwargs)
