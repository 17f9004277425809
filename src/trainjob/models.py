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


class FastNet(nn.Module):
    """airbench94's net (KellerJordan/cifar10-airbench) for any image size: a frozen 2x2 whitening conv, three
    conv-pool-BN-GELU groups and a global max pool, so 24x24 or 96x96 inputs and any class count work unchanged.

    The fast recipe passes every argument (its hyperparameter block is the one source, so none has a default here);
    model.pt records them.
    """

    def __init__(self, *, num_classes: int, image_size: int, widths: tuple[int, ...], bn_momentum: float, bn_eps: float,
                 logit_scale: float):
        super().__init__()
        kernel = 2
        # 2 * 3 * 2 * 2 = 24 channels: each whitening eigen-filter and its negation (set from data by the recipe).
        self.whiten = nn.Conv2d(3, 2 * 3 * kernel * kernel, kernel, bias=True)
        self.whiten.weight.requires_grad_(False)
        size, groups, channels = image_size - kernel + 1, [], self.whiten.out_channels
        for width in widths:
            # Halve until 1x1; past that a pool would leave nothing (e.g. an 8x8 image has 7 -> 3 -> 1 -> 1).
            groups.append(_FastGroup(channels, width, pool=size >= 2, bn_momentum=bn_momentum, bn_eps=bn_eps))
            size, channels = (size // 2 if size >= 2 else size), width
        self.groups = nn.Sequential(*groups)
        self.head = nn.Linear(channels, num_classes, bias=False)
        self.logit_scale = logit_scale
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) float, normalised -> (B, num_classes)
        x = self.groups(F.gelu(self.whiten(x)))  # (B, widths[-1], h, w)
        return self.head(x.amax(dim=(2, 3))) * self.logit_scale  # global max pool: any h, w


class _FastGroup(nn.Module):
    """conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU. BN scales stay 1 (only biases learn)."""

    def __init__(self, cin: int, cout: int, pool: bool, bn_momentum: float, bn_eps: float):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.norm1 = nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum)
        self.norm2 = nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum)
        for conv in (self.conv1, self.conv2):  # identity on the first cin channels: the group starts as a pass-through
            nn.init.dirac_(conv.weight.data[:conv.in_channels])
        for norm in (self.norm1, self.norm2):
            norm.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(self.pool(self.conv1(x))))
        return F.gelu(self.norm2(self.conv2(x)))


ARCHITECTURES["fastnet"] = FastNet


class TransferNet(nn.Module):
    """An ImageNet-pretrained backbone (backbones.py) and a linear head for the user's classes.

    trunk (always frozen) -> tail (trained by --finetune) -> pooled features -> head. The recipe loads the
    pretrained weights; built from model.pt, every weight comes from there. The recipe passes every argument.
    """

    def __init__(self, *, num_classes: int, image_size: int, backbone: str, finetune: bool):
        super().__init__()
        from trainjob import backbones

        self.trunk, self.tail = backbones.build_parts(backbone)
        self.head = nn.Linear(backbones.get(backbone).features, num_classes)
        self.finetune = finetune
        self.to(memory_format=torch.channels_last)

    def from_cached(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(x) if self.finetune else x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) float, normalised -> (B, num_classes)
        return self.head(self.tail(self.trunk(x.contiguous(memory_format=torch.channels_last))))


ARCHITECTURES["transfer"] = TransferNet
