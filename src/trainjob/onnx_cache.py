"""A model.pt's ONNX file, exported once into the cache folder, for batch scoring in onnxruntime where that is faster.

Measured with `make bench-predict` on the Zen 4 host (docs/benchmarks.md): onnxruntime scores the transfer recipe's
EfficientNet-Lite0 about twice as fast as PyTorch in bf16 (`train predict` 189 against 87 images/s on 10,000
photos), while PyTorch in bf16 is faster for the fast recipe's net (407 against 339). For the tutorial's net, scoring
is decoding-bound and onnxruntime saves 0.04 ms an image: its 5 s export would pay off only past ~125,000 images,
so it stays in PyTorch. The export takes about 10 s, so the file is kept under the cache
folder (TRAINJOB_CACHE_DIR, default ~/.cache/trainjob), keyed by the model file's bytes and the code that exports
it: paid once per model. A cache hit does not build the PyTorch model at all (its imports alone cost ~250 MB).
"""

import hashlib
import importlib.util
from collections.abc import Callable
from pathlib import Path

from trainjob import torchfile
from trainjob.errors import DiskFull, UserError
from trainjob.inference import Classifier, model_in

ENGINES = ("auto", "torch", "onnxruntime")
FASTER_IN_ONNXRUNTIME = frozenset({"transfer"})  # the recipes measured faster there (above)


def classifier_for(model: str, precision: str, engine: str, cache_dir: str | None,
                   log: Callable[[str], None]) -> Classifier:
    """The Classifier to score model with. A model.pt goes to onnxruntime always for engine onnxruntime, and for auto
    where its recipe scores faster there and the export can be kept; auto with an explicit precision keeps PyTorch:
    the user asked for its arithmetic."""
    path = model_in(model)
    if Path(path).suffix.lower() == ".onnx" or engine == "torch" or (engine == "auto" and precision != "auto"):
        return Classifier(path, precision)
    folder = _cache_folder(cache_dir, log)
    cached = folder / f"model-{_key(path)[:32]}.onnx" if folder else None
    if cached is not None and cached.is_file():
        onnx = Classifier(str(cached))
        if engine == "onnxruntime" or onnx.recipe in FASTER_IN_ONNXRUNTIME:
            onnx.exported_from = path
            return onnx
    in_torch = Classifier(path, precision)
    if engine == "auto" and in_torch.recipe not in FASTER_IN_ONNXRUNTIME:
        return in_torch
    if cached is None:
        if engine == "onnxruntime":
            raise UserError("--engine onnxruntime needs onnxruntime and onnxscript (pip install 'trainjob[serve]') "
                            "and a writable cache folder (TRAINJOB_CACHE_DIR) to keep the export in; or export it "
                            "with train export and pass the model.onnx")
        return in_torch
    if not _export(in_torch, cached, log):
        return in_torch
    onnx = Classifier(str(cached))
    onnx.exported_from = path
    return onnx


def _cache_folder(cache_dir: str | None, log: Callable[[str], None]) -> Path | None:
    """Where exports are kept; None without one, or without onnxruntime and onnxscript (looked up, not imported:
    a cache hit needs no exporter)."""
    from trainjob.data.cache import resolve_cache_dir

    if any(importlib.util.find_spec(name) is None for name in ("onnxruntime", "onnxscript")):
        return None
    return resolve_cache_dir(cache_dir, None, log)


def _export(in_torch: Classifier, path: Path, log: Callable[[str], None]) -> bool:
    """Export into the cache, once: a second process exporting the same model (two predicts started together) waits
    for the first and then uses its file. False where PyTorch scores instead."""
    from trainjob.export import write_onnx
    from trainjob.locks import one_maker

    with one_maker(path, f"another process is exporting {in_torch.path} to {path}; waiting for it", log):
        if path.is_file():
            return True
        log(f"exporting {in_torch.path} to ONNX once, for onnxruntime's faster scoring (about 10 s; kept as {path})")
        try:
            write_onnx(in_torch.model, in_torch.saved, in_torch.path, path)
        except DiskFull as e:  # a cache never stops scoring: PyTorch scores the same model
            log(f"scoring in PyTorch instead: no space left in {path.parent} for the ONNX export ({e.shortfall()})")
            return False
        except UserError as e:
            log(f"scoring in PyTorch instead: {e}")
            return False
    return True


def _key(model_path: str) -> str:
    """The model file's bytes, and what shapes the exported graph: the exporter's torch and trainjob's own code."""
    import torch

    from trainjob.export import OPSET
    from trainjob.version import code_version

    digest = hashlib.sha256(f"{torch.__version__}\0{OPSET}\0{code_version()}\0".encode())
    try:
        # Bounded, regular files only: /dev/zero, a FIFO or a terabyte file would hang here before load_model sees it.
        with torchfile.open_checked(model_path, "model file", "") as f:
            for block in torchfile.read_blocks(f, model_path):
                digest.update(block)
    except UserError:  # missing, unreadable or no model file: the Classifier that follows says so in one line
        return "unreadable"
    return digest.hexdigest()
