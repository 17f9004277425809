"""A trained model ready to score uint8 images: model.pt in PyTorch, or model.onnx (`train export`) in onnxruntime.

`train predict`, `train evaluate`, `train serve` and the Azure ML scoring scripts all score through here, so an
image is prepared and scored the same way everywhere. Nothing here imports a training module.
"""

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trainjob import contract, torchfile
from trainjob.errors import UserError
from trainjob.preprocess import normalize

MODEL_KEYS = frozenset({"arch", "arch_kwargs", "state_dict", "classes", "image_size", "normalization"})


def load_model(path: str):
    """model.pt -> (the model in eval mode, the saved dict); UserError for anything that is not one, or that would
    score wrongly: classes that do not match the head, weights that are NaN or infinite."""
    fix = contract.MODEL_FIX
    with torchfile.open_checked(path, "model file", fix) as f:
        try:
            saved = torchfile.load(f)
        except torchfile.Unloadable as e:
            raise UserError(f"{path} is not a model.pt written by trainjob ({e}): {fix}") from None
        size = os.fstat(f.fileno()).st_size
    _check_saved(path, saved, fix)
    model = _build(path, saved, size, fix)
    # A sum is NaN or infinite whenever a term is: 2 ms for Lite0's 3.4 M weights, where isfinite().all() on its
    # channels-last tensors took a second; a tensor whose sum only overflowed is then looked at element by element.
    bad = next((name for name, t in model.state_dict().items()
                if t.is_floating_point() and not t.sum().isfinite() and not t.isfinite().all()), None)
    if bad is not None:
        raise UserError(f"{path} holds NaN or infinite weights ({bad}): it would score every image NaN; the run "
                        "that wrote it diverged or the file was altered: retrain and pass the new model.pt")
    model.eval()
    return model, saved


def _check_saved(path: str, saved, fix: str) -> None:
    """What scoring reads besides the weights, checked before anything is built from it."""
    if not isinstance(saved, dict) or not isinstance(saved.get("arch_kwargs"), dict) or not MODEL_KEYS <= saved.keys():
        raise UserError(f"{path} is not a model.pt written by trainjob (no {', '.join(sorted(MODEL_KEYS))}): {fix}")
    classes, heads = saved["classes"], saved["arch_kwargs"].get("num_classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise UserError(f"{path} is not a model.pt written by trainjob (its classes are not a list of names): {fix}")
    # The head is built with num_classes outputs (and load_state_dict holds its weights to that shape): a name per
    # output, or predict names the wrong class, or none at all.
    if not isinstance(heads, int):
        raise UserError(f"{path} is not a model.pt written by trainjob (its arch_kwargs lack num_classes): {fix}")
    if len(classes) != heads:
        raise UserError(f"{path} names {len(classes)} classes but its head scores {heads}: the file was edited or "
                        f"mixed from two models; {fix}")
    size, norm = saved["image_size"], saved["normalization"]
    if not isinstance(size, int) or not 8 <= size <= 1024:  # --image_size's range; bounds each decoded image
        raise UserError(f"{path} asks for images of {size!r} pixels a side, outside trainjob's 8 to 1024: {fix}")
    if not isinstance(norm, dict) or not all(len(norm.get(k) or ()) == 3 for k in ("mean", "std")):
        raise UserError(f"{path} is not a model.pt written by trainjob (no per-channel mean and std): {fix}")


def _build(path: str, saved: dict, file_size: int, fix: str):
    from trainjob.models import build_model

    try:
        # Shapes first, on the meta device (no memory): a model.pt holds every weight it builds, so architecture
        # arguments asking for far more than the file holds (a 20 GB head) are refused before they are allocated.
        # Twice the file leaves room for weights stored in half precision.
        with torch.device("meta"):
            needed = sum(t.numel() * t.element_size()
                         for t in build_model(saved["arch"], **saved["arch_kwargs"]).state_dict().values())
        if needed > 2 * file_size:
            raise UserError(f"{path} describes {needed / 1e6:,.0f} MB of weights but holds {file_size / 1e6:,.1f} "
                            f"MB: it is not a model.pt written by trainjob; {fix}")
        model = build_model(saved["arch"], **saved["arch_kwargs"])
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise UserError(f"{path} is not a model.pt written by trainjob ({type(e).__name__}): {fix}") from None
    return model


def model_in(path: str) -> str:
    """path itself, or the one model.pt inside the folder path: Azure ML may hand a registered model over as the
    folder holding it, nested as it was registered (a deployment's AZUREML_MODEL_DIR is one; a job's custom_model
    input may be), so a model folder scores as its model.pt does."""
    if not Path(path).is_dir():
        return path
    folder = Path(path)
    if (folder / contract.MODEL_FILE).is_file():
        return str(folder / contract.MODEL_FILE)
    found = sorted(p for p in folder.rglob(contract.MODEL_FILE) if p.is_file())
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise UserError(f"{path} is a folder without a {contract.MODEL_FILE}: pass the {contract.MODEL_FILE} a "
                        "training run wrote (in its --output_dir), or the folder holding it")
    raise UserError(f"{path} is a folder holding {len(found)} {contract.MODEL_FILE} files ({found[0]}, {found[1]}"
                    f"{', ...' if len(found) > 2 else ''}): pass the one to use")


def classify(model, saved: dict, batch: torch.Tensor, top: int,
             precision: str = "fp32") -> list[list[tuple[str, float]]]:
    """(B, 3, S, S) uint8 -> for each image its `top` (class, probability) pairs, best first."""
    return ranked(probabilities(model, saved, batch, precision), saved["classes"], top)


def probabilities(model, saved: dict, batch: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """(B, 3, S, S) uint8 -> (B, classes) float32 softmax; precision bf16 runs the model under bf16 autocast."""
    norm = saved["normalization"]
    x = normalize(batch, tuple(norm["mean"]), tuple(norm["std"]))
    if _channels_last(model):  # the layout the recipe trained and evaluated in: the same arithmetic, the same scores
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits = tta_logits(model, x, tta_level(saved))
    return logits.float().softmax(1)


def tta_level(saved: dict) -> int:
    """The test-time augmentation the model was evaluated with: model.pt records it; a fast-recipe model.pt from
    before it did was evaluated with the fast recipe's level 2."""
    return int(saved.get("tta", 2 if saved.get("arch") == "fastnet" else 0))


def tta_logits(model, x: torch.Tensor, level: int) -> torch.Tensor:
    """Logits of normalised x (B, 3, H, W), averaged over test-time augmentations: 0 none, 1 the mirror image too,
    2 also the image shifted one pixel up-left and down-right (airbench's). The fast recipe's evaluation calls this,
    so predict, serve and export score a model exactly as its training run's reported accuracy was measured."""
    logits = _mirror_logits(model, x, level >= 1)
    if level >= 2:
        pad = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = (pad[:, :, :-2, :-2], pad[:, :, 2:, 2:])
        logits = 0.5 * logits + 0.25 * sum(_mirror_logits(model, s.contiguous(memory_format=torch.channels_last),
                                                          True) for s in shifted)
    return logits


def _mirror_logits(model, x: torch.Tensor, mirror: bool) -> torch.Tensor:
    logits = model(x).float()
    return 0.5 * (logits + model(x.flip(3)).float()) if mirror else logits


def _channels_last(model) -> bool:
    weight = next((p for p in model.parameters() if p.dim() == 4), None)
    return weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def ranked(probs: torch.Tensor, classes: list[str], top: int) -> list[list[tuple[str, float]]]:
    values, indices = probs.topk(min(top, len(classes)), dim=1)
    return [[(classes[i], float(v)) for v, i in zip(vs.tolist(), ix.tolist(), strict=True)]
            for vs, ix in zip(values, indices, strict=True)]


class Classifier:
    """classes, image_size and probabilities(uint8 batch) of a model.pt (torch) or a model.onnx (onnxruntime)."""

    exported_from: str | None = None  # the model.pt an ONNX file was exported from (onnx_cache), for the log

    def __init__(self, path: str, precision: str = "auto"):
        path = model_in(path)
        self.path = path
        self.precision_asked = precision != "auto"
        if Path(path).suffix.lower() == ".onnx":
            # onnxruntime opens the path itself: a FIFO or a device would hang it, so the same checks as a model.pt
            torchfile.open_checked(path, "ONNX file", "pass a model.onnx from train export or the model.pt").close()
            self.backend, self.precision = "onnxruntime", "fp32"
            self._session, meta = _onnx_session(path)
            self.classes, self.image_size = json.loads(meta["classes"]), int(meta["image_size"])
            self.recipe = meta.get("recipe", "")
        else:
            self.backend = "torch"
            self.model, self.saved = load_model(path)
            self.classes, self.image_size = list(self.saved["classes"]), int(self.saved["image_size"])
            self.recipe = str(self.saved.get("recipe", ""))
            self.precision = _precision(precision, self.recipe)

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 -> (B, classes) float32."""
        if self.backend == "torch":
            probs = probabilities(self.model, self.saved, batch, self.precision)
        else:
            logits = self._session.run(None, {self._session.get_inputs()[0].name: batch.numpy()})[0]
            probs = torch.from_numpy(np.asarray(logits, dtype=np.float32)).softmax(1)
        # load_model refuses a model.pt with NaN weights; a model.onnx's weights are not seen, so its scores are
        # checked instead (a few hundred comparisons a batch), never written out as NaN.
        if not probs.isfinite().all():
            raise UserError(f"{self.path} gives NaN scores: its weights are NaN or infinite (the run that wrote it "
                            "diverged, or the file was altered): retrain, and export the new model.pt")
        return probs

    def describe(self) -> str:
        exported = f", exported from {self.exported_from}" if self.exported_from else ""
        return f"{self.backend}, {self.precision}{exported}"


def _precision(requested: str, recipe: str) -> str:
    """auto: bf16 where the CPU does it natively, as the fast and transfer recipes train and evaluate; the tutorial's
    recipe trains and evaluates in fp32, so its models are scored in fp32 (the same numbers as its test evaluation)."""
    if requested != "auto":
        return requested
    from trainjob.runtime import choose_precision

    return "fp32" if recipe in ("tutorial", "") else choose_precision("auto", torch.device("cpu"))


def _onnx_session(path: str):
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("scoring a .onnx file needs onnxruntime: pip install 'trainjob[serve]' (the image has it), "
                        "or pass the model.pt") from None
    try:
        from trainjob.runtime import cpu_quota

        options = ort.SessionOptions()
        # Its default is every core of the host; in a container with a CPU quota that oversubscribes (as torch would).
        options.intra_op_num_threads = cpu_quota()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        json.loads(meta["classes"]), int(meta["image_size"])
    except (KeyError, ValueError) as e:
        raise UserError(f"{path} is not an ONNX file written by train export (its metadata lacks {e}): export the "
                        "model.pt again with train export") from None
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for missing and malformed files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot load {path} in onnxruntime ({first[:200]}): pass a model.onnx from train export "
                        "or the model.pt") from None
    return session, meta
