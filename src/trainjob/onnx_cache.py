"""A model.pt's ONNX file, exported once into the cache folder, for batch scoring in onnxruntime where that is faster.

Measured with `make bench-predict` on the Zen 4 host (docs/benchmarks.md): onnxruntime scores the transfer recipe's
EfficientNet-Lite0 about twice as fast as PyTorch in bf16 (bare forward 212 against 96 images/s; `train predict` 166-183
against 87), while PyTorch in bf16 is faster for the fast recipe's net (442 against 339 images/s) and level with it
for the tutorial's. The export takes about 10 s, so the file is kept under the cache folder (TRAINJOB_CACHE_DIR,
default ~/.cache/trainjob), keyed by the model file's bytes and the code that exports it: paid once per model.
"""

import hashlib
from collections.abc import Callable
from pathlib import Path

from trainjob.errors import UserError
from trainjob.inference import Classifier

FASTER_IN_ONNXRUNTIME = frozenset({"transfer"})  # the recipes measured faster there (above)


ENGINES = ("auto", "torch", "onnxruntime")


def choose_engine(classifier: Classifier, engine: str, cache_dir: str | None,
                  log: Callable[[str], None]) -> Classifier:
    """classifier, or the same model.pt in onnxruntime: always for engine onnxruntime, and for auto where its recipe
    scores faster there and the export can be kept. auto with an explicit --precision keeps PyTorch: the user asked
    for its arithmetic."""
    if classifier.backend != "torch" or engine == "torch":
        return classifier
    if engine == "auto" and (classifier.recipe not in FASTER_IN_ONNXRUNTIME or classifier.precision_asked):
        return classifier
    onnx = cached_onnx(classifier.path, classifier.model, classifier.saved, cache_dir, log)
    if onnx is None:
        if engine == "onnxruntime":
            raise UserError("--engine onnxruntime needs onnxruntime and onnxscript (pip install 'trainjob[serve]') "
                            "and a writable cache folder (TRAINJOB_CACHE_DIR) to keep the export in; or export it "
                            "with train export and pass the model.onnx")
        return classifier
    faster = Classifier(onnx)
    faster.exported_from = classifier.path
    return faster


def cached_onnx(model_path: str, model, saved: dict, cache_dir: str | None, log: Callable[[str], None]) -> str | None:
    """The cached ONNX file that scores as model_path does, exported now if it is not there yet; None where there is
    no usable cache folder, no exporter, or the export fails (said in one line): the caller then scores in PyTorch."""
    from trainjob.data.cache import resolve_cache_dir

    folder = resolve_cache_dir(cache_dir, None, log)
    if folder is None:
        return None
    try:
        import onnxruntime  # noqa: F401 - what will score it
        import onnxscript  # noqa: F401 - the exporter's backend
    except ImportError:
        return None
    path = folder / f"model-{_key(model_path)[:32]}.onnx"
    if path.is_file():
        return str(path)
    from trainjob.export import write_onnx

    log(f"exporting {model_path} to ONNX once, for onnxruntime's faster scoring (about 10 s; kept as {path})")
    try:
        write_onnx(model, saved, model_path, path)
    except UserError as e:  # a cache never stops scoring: PyTorch scores the same model
        log(f"scoring in PyTorch instead: {e}")
        return None
    return str(path)


def _key(model_path: str) -> str:
    """The model file's bytes, and what shapes the exported graph: the exporter's torch and trainjob's own code."""
    import torch

    from trainjob.export import OPSET
    from trainjob.version import code_version

    digest = hashlib.sha256(f"{torch.__version__}\0{OPSET}\0{code_version()}\0".encode())
    with Path(model_path).open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
