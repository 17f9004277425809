"""Generated, learnable images: the --demo dataset, and the pixels of every test's data files.

Each class has its own colour and its own stripe direction and frequency; every image gets a random stripe phase, a
random brightness and per-pixel noise, so one image alone is noisy but a tiny CNN separates the classes within an
epoch or two on a few hundred images.
"""

import math

import numpy as np
import torch

from trainjob.data.dataset import Dataset, Split

DEMO_TRAIN_IMAGES = 5000
DEMO_TEST_IMAGES = 1000
DEMO_CLASSES = 10
DEMO_IMAGE_SIZE = 32  # pixels per side, like CIFAR-10
NOISE_STD = 28.0  # per-pixel Gaussian noise, in 0-255 grey levels


def class_names(num_classes: int) -> list[str]:
    return [f"pattern_{i}" for i in range(num_classes)]


def _class_colour(label: int, num_classes: int) -> np.ndarray:
    """An RGB colour in 0-255 spread around the hue circle, so neighbouring labels still differ. (3,) float64"""
    hue = label / num_classes
    angles = 2 * math.pi * (hue + np.array([0.0, 1 / 3, 2 / 3]))
    return 128 + 90 * np.cos(angles)


def pattern_images(labels: np.ndarray, num_classes: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Images whose class can be read from colour and stripes. labels (N,) int -> (N, H, W, 3) uint8."""
    height, width = size
    n = len(labels)
    ys, xs = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")  # (H, W)
    labels = np.asarray(labels, dtype=np.int64)
    angle = math.pi * labels / num_classes  # (N,) stripe direction per class
    frequency = 2.0 + 1.5 * (labels % 3)  # (N,) stripes per image side
    phase = rng.uniform(0, 2 * math.pi, size=n)  # (N,) so stripe position carries no class information
    along = np.cos(angle)[:, None, None] * xs + np.sin(angle)[:, None, None] * ys  # (N, H, W)
    stripes = np.sin(2 * math.pi * frequency[:, None, None] * along + phase[:, None, None])  # (N, H, W) in [-1, 1]
    colours = np.stack([_class_colour(int(c), num_classes) for c in labels]) if n else np.zeros((0, 3))  # (N, 3)
    brightness = rng.uniform(0.8, 1.2, size=(n, 1, 1, 1))
    images = colours[:, None, None, :] * brightness + 45.0 * stripes[..., None]  # (N, H, W, 3)
    images += rng.normal(0.0, NOISE_STD, size=images.shape)
    return np.clip(images, 0, 255).astype(np.uint8)


def balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """n labels, every class as often as possible, in random order. (n,) int64"""
    return rng.permutation(np.arange(n, dtype=np.int64) % num_classes)


def make_demo_dataset(*, image_size: int = DEMO_IMAGE_SIZE, seed: int = 0, n_train: int = DEMO_TRAIN_IMAGES,
                      n_test: int = DEMO_TEST_IMAGES, num_classes: int = DEMO_CLASSES) -> Dataset:
    """The --demo dataset: same seed, same images."""
    rng = np.random.default_rng(seed)
    splits = []
    for n in (n_train, n_test):
        labels = balanced_labels(n, num_classes, rng)
        pixels = pattern_images(labels, num_classes, (image_size, image_size), rng)  # (N, H, W, 3)
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
        splits.append(Split(inputs=images, labels=torch.from_numpy(labels)))
    return Dataset(train=splits[0], test=splits[1], classes=class_names(num_classes), format="synthetic",
                   source="generated", test_split="generated test set", synthetic=True)
