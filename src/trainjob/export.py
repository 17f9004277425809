"""`train export MODEL.pt [--output FILE.onnx]`: the model as one self-contained ONNX file that takes raw images.

The file's input is what a decoder gives: uint8 images (N, 3, H, W) at the model's size, any N. The normalisation
`train predict` applies is inside the graph, so a caller in onnxruntime (a phone, a browser, a server without
PyTorch) only decodes and resizes. Its output is the class scores; the metadata says what they mean:
`classes` (a JSON list), `image_size`, `normalization` (JSON), `recipe`, and `code_version`: the code that trained
it (version.code_version; absent for a model.pt from before it was recorded).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from trainjob import contract
from trainjob.atomic import atomic_write
from trainjob.errors import UserError, user_errors_exit
from trainjob.inference import load_model, tta_level, tta_logits
from trainjob.text import say

INPUT, OUTPUT = "images", "scores"
OPSET = 18  # the dynamo exporter's default in torch 2.14; onnxruntime 1.32 runs it


class RawImageClassifier(nn.Module):
    """uint8 (N, 3, H, W) -> class scores, normalising exactly as `predict` does (preprocess.normalize), with the
    test-time augmentation the model was evaluated with (inference.tta_logits)."""

    def __init__(self, model: nn.Module, mean, std, tta: int = 0):
        super().__init__()
        self.model, self.tta = model, tta
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The same arithmetic as normalize(), written out: normalize()'s in-place ops on cached constants export to a
        # graph that scores wrongly (tried: onnxruntime off PyTorch by 3.6 on the tutorial net).
        return tta_logits(self.model, (images.float() / 255 - self.mean) / self.std, self.tta)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=f"a {contract.MODEL_FILE} written by `train`")
    p.add_argument("--output", help="the .onnx file to write (default: model.onnx beside MODEL)")
    return p


def metadata(saved: dict) -> dict[str, str]:
    meta = {"classes": json.dumps(list(saved["classes"])), "image_size": str(int(saved["image_size"])),
            "normalization": json.dumps(saved["normalization"]), "recipe": str(saved.get("recipe", "")),
            "input": f"{INPUT}: uint8 (N, 3, H, W) RGB, H = W = image_size; output {OUTPUT}: (N, classes) logits"}
    # The training run's code, not the exporter's: the weights are what the file's scores depend on.
    if saved.get("code_version"):
        meta["code_version"] = str(saved["code_version"])
    return meta


def export(model_path: str, output: Path) -> dict:
    """Write output from model_path; return what was checked. UserError for anything the user can fix."""
    model, saved = load_model(model_path)
    try:
        import onnxruntime  # noqa: F401 - checked up front: the export is verified with it
        import onnxscript  # noqa: F401 - the dynamo exporter's backend
    except ImportError as e:
        raise UserError(f"export needs {e.name}, which is not installed: pip install 'trainjob[serve]' "
                        "(the image has it)") from None
    wrapped = write_onnx(model, saved, model_path, output)
    return {"output": str(output), "bytes": output.stat().st_size,
            "max_abs_difference": check(output, wrapped, int(saved["image_size"]))}


def write_onnx(model: nn.Module, saved: dict, model_path: str, output: Path) -> nn.Module:
    """Export the loaded model to output (written whole or not at all); the wrapped module that was exported."""
    size = int(saved["image_size"])
    norm = saved["normalization"]
    wrapped = RawImageClassifier(model, norm["mean"], norm["std"], tta_level(saved)).eval()
    example = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    try:
        program = torch.onnx.export(wrapped, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
                                    opset_version=OPSET, verbose=False)
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; the user needs the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot export {model_path} to ONNX ({type(e).__name__}: {first[:300]})") from None
    program.model.metadata_props.update(metadata(saved))
    data = program.model_proto.SerializeToString()  # weights inside: one file to copy around (what save() writes)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(output, lambda f: f.write(data))  # whole or not at all; a full disk is one line (DiskFull)
    except OSError as e:
        raise UserError(f"cannot write {output} ({e.strerror or e}): pass --output in a writable folder") from None
    return wrapped


def check(path: Path, wrapped: nn.Module, size: int) -> float:
    """Run the written file in onnxruntime on batches of 1 and 5; the largest difference from PyTorch's scores."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for n in (1, 5):
        batch = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))
        with torch.inference_mode():
            expected = wrapped(batch)
        got = torch.from_numpy(session.run([OUTPUT], {INPUT: batch.numpy()})[0])
        worst = max(worst, float((got - expected).abs().max()))
    return worst


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output) if args.output else Path(args.model).with_name("model.onnx")
    done = export(args.model, output)
    say(f"wrote {done['output']} ({done['bytes'] / 1e6:.1f} MB, weights inside); onnxruntime matches PyTorch to "
        f"{done['max_abs_difference']:.1e} on random images")
    return contract.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
