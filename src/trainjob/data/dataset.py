"""The in-memory dataset every loader returns: uint8 tensors batched by index, never per-image objects."""

from dataclasses import dataclass, field

import torch

# More classes than this is no dataset a 2-core trainer can learn, and its confusion matrix alone (k x k int64 and a
# k x k picture) would take gigabytes: 200,000 label names would ask for 320 GB after training.
MAX_CLASSES = 1000


@dataclass
class Split:
    inputs: torch.Tensor  # (N, 3, H, W) uint8 pixels, contiguous; for --recipe transfer, backbone feature rows (N, ...)
    labels: torch.Tensor  # (N,) int64, values in [0, num_classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class Dataset:
    train: Split
    test: Split
    classes: list[str]
    format: str  # "cifar-batches" | "cifar-tar" | "image-folders" | "image-folder-split" | "synthetic", or a
    # manifest's: "manifest-csv" | "manifest-jsonl" | "mltable"
    source: str  # the path it came from ("generated" for --demo)
    test_split: str  # where the test images came from: "test_batch", "test", "val", "held-out 10%", ...
    synthetic: bool = False
    skipped: list[dict] = field(default_factory=list)  # [{"path": ..., "reason": ...}] unreadable files left out
    cache: str | None = None  # the decoded-image cache file used or written, if any
    input_size: tuple[int, int] | None = None  # (H, W) of the images when the splits hold features instead

    @property
    def image_size(self) -> tuple[int, int]:
        if self.input_size is not None:
            return self.input_size
        return int(self.train.inputs.shape[2]), int(self.train.inputs.shape[3])

    def describe(self) -> dict:
        """The summary printed at start and stored in summary.json."""
        return {
            "format": self.format,
            "source": self.source,
            "synthetic": self.synthetic,
            "classes": list(self.classes),
            "num_classes": len(self.classes),
            "train_images": len(self.train),
            "test_images": len(self.test),
            "test_split": self.test_split,
            "image_size": list(self.image_size),
            "skipped_files": len(self.skipped),
            "skipped": self.skipped[:100],
            "cache": self.cache,
        }
