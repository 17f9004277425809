"""Scores from a confusion matrix (rows: true class, columns: predicted), for training's evaluation and its reports."""

import torch


def confusion_matrix(truth: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N,) true and (N,) predicted class indices -> (num_classes, num_classes) int64 counts."""
    return torch.bincount(truth * num_classes + predicted, minlength=num_classes ** 2).view(num_classes, num_classes)


def accuracy(confusion: torch.Tensor) -> float:
    return float(confusion.diag().sum()) / max(1, int(confusion.sum()))


def per_class_accuracy(confusion: torch.Tensor, classes: list[str]) -> dict[str, float]:
    totals = confusion.sum(1)
    return {c: float(confusion[i, i]) / max(1, int(totals[i])) for i, c in enumerate(classes)}
