"""The scoring script the Azure ML inference server runs (`train serve` locally, a managed online endpoint on Azure).

    GET  /score                  the model's classes and image size
    POST /score                  one image's bytes (any format `train predict` reads) -> {"top": [...]}
    POST /score  (JSON)          {"images": ["<base64>", ...], "top": 3} -> {"predictions": [{"top": [...]}, ...]}
    ?top=K                       how many classes to return per image (default 3)

Each image is decoded and scored by the same code as `train predict`. A request the script cannot use is refused
with {"error": reason} and the server goes on: 400 for an empty or cut-short body, a body that is not an image (or a
decompression bomb), JSON that is malformed, nested deeper than MAX_JSON_DEPTH, of the wrong shape or types, with
no images or over MAX_IMAGES, or with an entry that is not base64 or not an image; 408 for a body that stalls
(serve_limits.BodyTimeout); 413 for a body over TRAINJOB_SERVE_MAX_BYTES (default contract.DEFAULT_SERVE_MAX_BYTES).
The model: $TRAINJOB_MODEL (`train serve` sets it), else the first model.pt under $AZUREML_MODEL_DIR (where Azure
ML mounts a registered model).
"""

import base64
import binascii
import io
import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

from trainjob import contract
from trainjob.text import printable

MAX_IMAGES = 64  # per JSON request: each is decoded and held at once
MAX_TOP = 1000
MAX_JSON_DEPTH = 8  # a request is two levels deep ({"images": [...]}); json.loads recurses once a level
MAX_JSON_TOKENS = 1000  # strings, brackets and commas: a request has MAX_IMAGES strings and a few more
USAGE = f"send an image's bytes, or JSON {{\"images\": [base64 image files, at most {MAX_IMAGES}], \"top\": K}}"
# One token of a JSON text that can nest or count: a string (its escapes skipped; one left open runs to the end, so
# the scan stays linear), a bracket, a comma.
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\Z)|[\[\]{},]', re.DOTALL)
_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
               bool: "true or false", type(None): "null"}

log = logging.getLogger("azmlinfsrv.trainjob")  # the server's logger: its handler and format
# Two threads per worker process decode and score, whichever of the server's threads (serve_worker) read the
# request. Measured on the 2-vCPU host with a transfer model: 12 requests of 64 images at once peaked at 7.5 GB with
# each thread scoring its own, 3.1 GB with two scoring threads, 2.0 GB with one (a lone request: 1.8 GB); photos
# posted one per request from 4 clients: 28 to 29 req/s with two, 17 to 18 with one (a forward leaves cores idle
# that a second one uses). More at once: --workers.
SCORING_THREADS = 2
_scorer = ThreadPoolExecutor(max_workers=SCORING_THREADS, thread_name_prefix="score")  # threads start on demand
_model = None
_saved: dict = {}


def find_model() -> Path:
    if os.environ.get(contract.ENV_SERVE_MODEL):
        return Path(os.environ[contract.ENV_SERVE_MODEL])
    root = Path(os.environ.get(contract.ENV_AZUREML_MODEL_DIR, "."))
    found = sorted(root.rglob(contract.MODEL_FILE))
    if not found:
        raise FileNotFoundError(f"no model.pt under {contract.ENV_AZUREML_MODEL_DIR}={printable(root)}: register "
                                "the model.pt a training run wrote (make register-model)")
    return found[0]


def init() -> None:
    global _model, _saved
    from trainjob import settings
    from trainjob.inference import load_model

    settings.check("score")  # an online endpoint starts here, not through the CLI that checks them for train serve
    path = find_model()
    _model, _saved = load_model(str(path))
    classes = _saved["classes"]
    log.info("model %s: %d classes (%s), %d px", printable(path), len(classes),
             printable(", ".join(map(str, classes[:20])) + (", ..." if len(classes) > 20 else "")),
             int(_saved["image_size"]))


def _reply(body: dict, status: int = 200) -> AMLResponse:
    return AMLResponse(body, status, json_str=True)


def _refuse(status: int, reason: str) -> AMLResponse:
    """The exact reason in the JSON answer; escaped in the log, since it may quote the request."""
    log.info("refused %d: %s", status, printable(reason))
    return _reply({"error": reason}, status)


def _max_bytes() -> int:
    from trainjob import settings

    return settings.value(contract.ENV_SERVE_MAX_BYTES)


@rawhttp
def run(request):
    if request.method == "GET":
        return _reply({"classes": list(_saved["classes"]), "image_size": int(_saved["image_size"]),
                       "usage": f"POST to /score: {USAGE}"})
    if request.method == "OPTIONS":  # as the server answers for a script without @rawhttp: a CORS preflight
        return AMLResponse("", 200)
    limit = _max_bytes()
    if request.content_length is not None and request.content_length > limit:
        return _refuse(413, f"request body of {request.content_length} bytes is over the {limit}-byte limit")
    body = _read_body(request, limit)
    if isinstance(body, AMLResponse):
        return body
    if len(body) > limit:
        return _refuse(413, f"request body is over the {limit}-byte limit")
    if request.content_length is not None and len(body) < request.content_length:
        return _refuse(400, f"request body cut short: {len(body)} of its {request.content_length} bytes came")
    if not body:
        return _refuse(400, f"empty body: {USAGE}")
    try:
        top = int(request.args.get("top", 3))
    except ValueError:
        return _refuse(400, f"top={request.args.get('top')!r} is not a whole number")
    if request.mimetype == "application/json":
        return _score_json(body, top)
    return _score([body], top, single=True)


def _read_body(request, limit: int) -> bytes | AMLResponse:
    """At most limit + 1 bytes (bounded even with no Content-Length), or the refusal of a body that cannot be read."""
    try:
        return request.stream.read(limit + 1)
    except Exception as e:  # noqa: BLE001 - gunicorn's and werkzeug's readers raise their own types for a bad body
        # werkzeug reports a failed read as ClientDisconnected, raised while handling the worker's error.
        cause = e if isinstance(e, TimeoutError) else e.__context__
        if isinstance(cause, TimeoutError):
            return _refuse(408, f"{cause}: send the request body as fast as the connection allows")
        return _refuse(400, f"request body cut short or malformed ({type(e).__name__}: {e}): send the whole body, "
                            "with a Content-Length that matches it")


def _json_shape_problem(body: bytes) -> str | None:
    """Why a JSON body cannot be a request, found before json.loads recurses into it: too deep (a body of 50,000 '['
    is a RecursionError inside the parser) or too many values (a list of millions of numbers fills memory)."""
    depth = 0
    for n, token in enumerate(_JSON_TOKEN.finditer(body)):
        if n >= MAX_JSON_TOKENS:
            return f"over {MAX_JSON_TOKENS} JSON strings, brackets and commas"
        char = body[token.start()]
        if char in b"[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
        elif char in b"]}":
            depth -= 1
    return None


def _score_json(body: bytes, top: int) -> AMLResponse:
    try:
        # UTF-8 only (RFC 8259), as _json_shape_problem reads it: in UTF-16, which json.loads would also take, a
        # character can hold the byte of a quote and hide brackets from the count.
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return _refuse(400, f"JSON body is not UTF-8 ({e})")
    problem = _json_shape_problem(body)
    if problem:
        return _refuse(400, f"{problem}: {USAGE}")
    try:
        payload = json.loads(text)
    except ValueError as e:
        return _refuse(400, f"body is not valid JSON ({e}): {USAGE}")
    if not isinstance(payload, dict):
        return _refuse(400, f"the JSON body is {_JSON_TYPES[type(payload)]}, not an object: {USAGE}")
    images, top = payload.get("images"), payload.get("top", top)
    if not isinstance(images, list):
        return _refuse(400, f"\"images\" is {_JSON_TYPES[type(images)]}, not a list: {USAGE}")
    if not 1 <= len(images) <= MAX_IMAGES:
        return _refuse(400, f"\"images\" holds {len(images)} images: send 1 to {MAX_IMAGES} per request")
    if type(top) is not int:  # noqa: E721 - bool is an int, and true is not a number of classes
        return _refuse(400, f"\"top\" is {_JSON_TYPES[type(top)]}, not a whole number")
    decoded = []
    for n, image in enumerate(images):
        if not isinstance(image, str):
            return _refuse(400, f"images[{n}] is {_JSON_TYPES[type(image)]}, not a base64 string")
        try:
            decoded.append(base64.b64decode(image, validate=True))
        except (ValueError, binascii.Error) as e:
            return _refuse(400, f"images[{n}] is not base64 ({e})")
    return _score(decoded, top, single=False)


def _score(files: list[bytes], top: int, single: bool) -> AMLResponse:
    if not 1 <= top <= MAX_TOP:
        return _refuse(400, f"top must be 1 to {MAX_TOP}, got {top}")
    return _scorer.submit(_decode_and_classify, files, top, single).result()


def _decode_and_classify(files: list[bytes], top: int, single: bool) -> AMLResponse:
    """In the scoring thread: decoding too, since a 64-megapixel image is 200 MB while it decodes."""
    import torch

    from trainjob.inference import classify
    from trainjob.preprocess import UnreadableImage, decode_file

    size = int(_saved["image_size"])
    arrays = []
    for n, data in enumerate(files):
        where = "body" if single else f"images[{n}]"
        if not data:
            return _refuse(400, f"{where} is empty")
        try:
            arrays.append(torch.from_numpy(decode_file(io.BytesIO(data), size).copy()))
        except UnreadableImage as e:
            return _refuse(400, f"{where}: {e}; send an image file such as .jpg or .png")
    ranked = classify(_model, _saved, torch.stack(arrays), top)
    results = [{"top": [{"class": c, "probability": p} for c, p in r]} for r in ranked]
    return _reply(results[0] if single else {"predictions": results})
