"""The scoring script the Azure ML inference server runs (`train serve` locally, a managed online endpoint on Azure).

    GET  /score                  the model's classes and image size
    POST /score                  one image's bytes (any format `train predict` reads) -> {"top": [...]}
    POST /score  (JSON)          {"images": ["<base64>", ...], "top": 3} -> {"predictions": [{"top": [...]}, ...]}
    ?top=K                       how many classes to return per image (default 3)

Each image is decoded and scored by the same code as `train predict`. Bad input is refused with a reason and the
server goes on: an empty body, not an image or a decompression bomb is 400, a body over TRAINJOB_SERVE_MAX_BYTES
(default contract.DEFAULT_SERVE_MAX_BYTES) or over MAX_IMAGES images is 413. The model: $TRAINJOB_MODEL (`train
serve` sets it), else the first model.pt under $AZUREML_MODEL_DIR (where Azure ML mounts a registered model).
"""

import base64
import binascii
import io
import json
import os
from pathlib import Path

from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

from trainjob import contract

MAX_IMAGES = 64  # per JSON request: each is decoded and held at once
MAX_TOP = 1000

_model = None
_saved: dict = {}


def find_model() -> Path:
    if os.environ.get(contract.ENV_SERVE_MODEL):
        return Path(os.environ[contract.ENV_SERVE_MODEL])
    root = Path(os.environ.get(contract.ENV_AZUREML_MODEL_DIR, "."))
    found = sorted(root.rglob(contract.MODEL_FILE))
    if not found:
        raise FileNotFoundError(f"no model.pt under {contract.ENV_AZUREML_MODEL_DIR}={root}: register the model.pt a "
                                "training run wrote (make register-model)")
    return found[0]


def init() -> None:
    global _model, _saved
    from trainjob.inference import load_model

    _model, _saved = load_model(str(find_model()))


def _reply(body: dict, status: int = 200) -> AMLResponse:
    return AMLResponse(body, status, json_str=True)


def _refuse(status: int, reason: str) -> AMLResponse:
    return _reply({"error": reason}, status)


def _max_bytes() -> int:
    return int(os.environ.get(contract.ENV_SERVE_MAX_BYTES, contract.DEFAULT_SERVE_MAX_BYTES))


@rawhttp
def run(request):
    if request.method == "GET":
        return _reply({"classes": list(_saved["classes"]), "image_size": int(_saved["image_size"]),
                       "usage": "POST an image's bytes to /score, or JSON {\"images\": [base64, ...]}"})
    limit = _max_bytes()
    if request.content_length is not None and request.content_length > limit:
        return _refuse(413, f"request body of {request.content_length} bytes is over the {limit}-byte limit")
    body = request.stream.read(limit + 1)  # bounded even when the client sends no Content-Length
    if len(body) > limit:
        return _refuse(413, f"request body is over the {limit}-byte limit")
    if not body:
        return _refuse(400, "empty body: POST an image's bytes (or JSON {\"images\": [base64, ...]})")
    try:
        top = int(request.args.get("top", 3))
    except ValueError:
        return _refuse(400, f"top={request.args.get('top')!r} is not a whole number")
    if request.mimetype == "application/json":
        return _score_json(body, top)
    return _score([body], top, single=True)


def _score_json(body: bytes, top: int) -> AMLResponse:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        return _refuse(400, f"body is not valid JSON ({e})")
    images = payload.get("images") if isinstance(payload, dict) else None
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        return _refuse(400, "JSON body needs \"images\": a non-empty list of base64-encoded image files")
    if len(images) > MAX_IMAGES:
        return _refuse(413, f"{len(images)} images in one request; at most {MAX_IMAGES}")
    try:
        top = int(payload.get("top", top))
        decoded = [base64.b64decode(i, validate=True) for i in images]
    except (ValueError, TypeError, binascii.Error) as e:
        return _refuse(400, f"images[] must be base64 and top a whole number ({e})")
    return _score(decoded, top, single=False)


def _score(files: list[bytes], top: int, single: bool) -> AMLResponse:
    import torch

    from trainjob.inference import classify
    from trainjob.preprocess import UnreadableImage, decode_file

    if not 1 <= top <= MAX_TOP:
        return _refuse(400, f"top must be 1 to {MAX_TOP}, got {top}")
    size = int(_saved["image_size"])
    arrays = []
    for n, data in enumerate(files):
        if not data:
            return _refuse(400, f"image {n} is empty")
        try:
            arrays.append(torch.from_numpy(decode_file(io.BytesIO(data), size).copy()))
        except UnreadableImage as e:
            where = "body" if single else f"image {n}"
            return _refuse(400, f"{where}: {e}; send an image file such as .jpg or .png")
    ranked = classify(_model, _saved, torch.stack(arrays), top)
    results = [{"top": [{"class": c, "probability": p} for c, p in r]} for r in ranked]
    return _reply(results[0] if single else {"predictions": results})
