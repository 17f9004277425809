"""`train predict MODEL IMAGE...`: the top classes of each image, with probabilities, from a trained model.pt."""

import argparse
import json
import pickle
import sys
import zipfile
from pathlib import Path

import torch

from trainjob import contract
from trainjob.errors import UserError, user_errors_exit


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train predict", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("model", help=f"a {contract.MODEL_FILE} written by `train`")
    p.add_argument("images", nargs="+", help="image files (any format and size PIL reads)")
    p.add_argument("--top", type=int, default=3, help="how many classes to show per image")
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of text")
    return p


def load_model(path: str):
    from trainjob.models import build_model

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(saved["arch"], **saved["arch_kwargs"])
        model.load_state_dict(saved["state_dict"])
    except FileNotFoundError:
        raise UserError(f"no model file at {path}: pass the {contract.MODEL_FILE} a training run wrote "
                        "(in its --output_dir)") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder: pass the {contract.MODEL_FILE} inside a training run's output "
                        "folder") from None
    except PermissionError:
        raise UserError(f"cannot read {path}: permission denied") from None
    except (RuntimeError, KeyError, TypeError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile,
            AttributeError) as e:
        raise UserError(f"{path} is not a model.pt written by trainjob ({type(e).__name__}): pass the "
                        f"{contract.MODEL_FILE} from a training run's output folder") from None
    model.eval()
    return model, saved


def read_image(path: str, size: int) -> torch.Tensor:
    """One image file -> (3, size, size) uint8, prepared exactly as training prepared image folders."""
    from trainjob.preprocess import UnreadableImage, decode_file

    try:
        return torch.tensor(decode_file(path, size))  # a copy: PIL's buffer is read-only
    except UnreadableImage as e:
        raise UserError(f"cannot read image {path}: {e}; expected an image file such as .jpg or .png") from None


def classify(model, saved: dict, batch: torch.Tensor, top: int) -> list[list[tuple[str, float]]]:
    """(B, 3, S, S) uint8 -> for each image its `top` (class, probability) pairs, best first. `train serve` and
    `train predict` both call this, so a served image is prepared and scored exactly as predict does it."""
    from trainjob.preprocess import normalize

    norm = saved["normalization"]
    with torch.inference_mode():
        probs = model(normalize(batch, tuple(norm["mean"]), tuple(norm["std"]))).float().softmax(1)
    classes = saved["classes"]
    ranked = []
    for p in probs:
        values, indices = p.topk(min(top, len(classes)))
        ranked.append([(classes[i], float(v)) for v, i in zip(values, indices, strict=True)])
    return ranked


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model, saved = load_model(args.model)
    size = int(saved["image_size"])
    batch = torch.stack([read_image(p, size) for p in args.images])  # (B, 3, size, size) uint8
    for path, ranked in zip(args.images, classify(model, saved, batch, args.top), strict=True):
        if args.json:
            print(json.dumps({"image": path, "top": [{"class": c, "probability": v} for c, v in ranked]}))
        else:
            print(f"{Path(path).name}: " + ", ".join(f"{c} {v:.1%}" for c, v in ranked))
    return contract.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
