"""The results people look at: summary.json, training curves and a confusion matrix (PNG)."""

import os
import sys
from pathlib import Path

import torch

from trainjob import contract
from trainjob.atomic import atomic_write, write_json
from trainjob.metrics import accuracy
from trainjob.text import printable


def write_summary(output_dir: Path, summary: dict) -> None:
    write_json(output_dir / contract.SUMMARY_FILE, summary)


def plot_training_curves(output_dir: Path, metrics: list[dict]) -> None:
    """Left: the logged running loss per step and the mean loss per epoch. Right: test accuracy per epoch."""
    plt = _pyplot(output_dir)
    losses = [m for m in metrics if m["type"] == "loss"]
    epochs = [m for m in metrics if m["type"] == "epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    if losses:
        ax_loss.plot([m["global_step"] for m in losses], [m["loss"] for m in losses], label="running loss", lw=1)
    if epochs:
        ax_loss.plot([m["epoch"] * m["steps_per_epoch"] for m in epochs], [m["train_loss"] for m in epochs], "o-",
                     label="epoch mean")
    ax_loss.set(title="Training loss", xlabel="mini-batch", ylabel="cross-entropy")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_acc.plot([m["epoch"] for m in epochs], [100 * m["test_accuracy"] for m in epochs], "o-", color="tab:green")
    ax_acc.set(title="Test accuracy", xlabel="epoch", ylabel="%", ylim=(0, 100))
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, output_dir / contract.CURVES_FILE)


def plot_confusion(output_dir: Path, confusion: torch.Tensor, classes: list[str]) -> None:
    """Rows: true class, columns: predicted; cells coloured by the share of the true class, annotated with counts."""
    plt = _pyplot(output_dir)
    k = len(classes)
    shares = (confusion.float() / confusion.sum(1, keepdim=True).clamp(min=1)).numpy()
    size = min(4 + 0.45 * k, 24)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the true class")
    if k <= 40:
        labels = [tick_label(c) for c in classes]
        ax.set_xticks(range(k), labels, rotation=45, ha="right")
        ax.set_yticks(range(k), labels)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if shares[i, j] > 0.5 else "black")
    ax.set(title=f"Confusion matrix (test accuracy {accuracy(confusion):.1%})", xlabel="predicted", ylabel="true")
    fig.tight_layout()
    _save(fig, output_dir / contract.CONFUSION_FILE)


def tick_label(name: str) -> str:
    """A class name as the plot shows it: escaped as on a terminal (a control character has no glyph, and
    Matplotlib's warning about it would print it raw), and a $ taken literally, not as the start of mathtext (a
    folder named $x^$ would stop the run as it writes its results)."""
    return printable(name).replace("$", r"\$")


def _pyplot(output_dir: Path | None = None):
    if output_dir is not None:
        _matplotlib_config_dir(output_dir)
    import matplotlib

    matplotlib.use("Agg")  # no display in containers and clusters
    import matplotlib.pyplot as plt

    return plt


def _matplotlib_config_dir(output_dir: Path) -> None:
    """Matplotlib caches its font list in MPLCONFIGDIR (else ~/.config/matplotlib), falls back to a new folder in
    /tmp, and fails when neither is writable, as in `docker run --read-only` without a tmpfs. Then its cache goes
    to a hidden folder in the output folder, the one place a run may always write."""
    if "matplotlib" in sys.modules:
        return
    wanted = Path(os.environ.get("MPLCONFIGDIR") or Path("~/.config/matplotlib").expanduser())
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        if os.access(wanted, os.W_OK | os.X_OK):
            return
    except OSError:
        pass
    os.environ["MPLCONFIGDIR"] = str(Path(output_dir).resolve() / ".matplotlib")


def _save(fig, path: Path) -> None:
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    finally:
        _pyplot().close(fig)
