"""train serve: the Azure ML inference server with trainjob's scoring script, over real HTTP on loopback."""

import base64
import json
import socket

import pytest
from cli_runner import assert_user_error, cli_env, run_train
from datagen import png_claiming_size
from serving import Server, request

pytest.importorskip("azureml_inference_server_http")


@pytest.fixture(scope="module")
def server(trained_models):
    # A 200 kB body limit keeps the oversized upload small.
    with Server(trained_models["tutorial"], env=cli_env(TRAINJOB_SERVE_MAX_BYTES="200000")) as s:
        yield s


def predicted(model, images) -> list[list[dict]]:
    result = run_train("predict", model, *images, "--json", "--top", "3")
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["top"] for line in result.stdout.splitlines()]


def test_liveness_and_the_model_description(server):
    status, body = request(server.url + "/")
    assert status == 200
    status, body = request(server.url + "/score")
    assert status == 200 and body["classes"] == ["cat", "dog", "ship"] and body["image_size"] == 32


def test_an_image_posted_to_score_gets_predicts_classes_and_probabilities(server, trained_models):
    images = sorted((trained_models["data"] / "test").rglob("*.*"))[:6]
    expected = predicted(trained_models["tutorial"], images)
    for image, want in zip(images, expected, strict=True):
        status, body = request(server.url + "/score", image.read_bytes(), "image/png")
        assert status == 200, body
        assert [t["class"] for t in body["top"]] == [t["class"] for t in want]
        assert [t["probability"] for t in body["top"]] == pytest.approx([t["probability"] for t in want], abs=1e-6)
    status, body = request(server.url + "/score?top=1", images[0].read_bytes())
    assert status == 200 and len(body["top"]) == 1


def test_several_images_as_json(server, trained_models):
    images = sorted((trained_models["data"] / "test").rglob("*.*"))[:3]
    payload = json.dumps({"images": [base64.b64encode(p.read_bytes()).decode() for p in images], "top": 2})
    status, body = request(server.url + "/score", payload.encode(), "application/json")
    assert status == 200, body
    assert [[t["class"] for t in p["top"]] for p in body["predictions"]] == \
        [[t["class"] for t in want[:2]] for want in predicted(trained_models["tutorial"], images)]


@pytest.mark.parametrize("body, content_type, status, reason", [
    (b"", "image/png", 400, "empty body"),
    (b"just some text, not a picture", "image/jpeg", 400, "not an image"),
    (png_claiming_size(40_000, 40_000), "image/png", 400, "decompression bomb"),
    (b"\0" * 300_000, "image/png", 413, "over the 200000-byte limit"),
    (b'{"images": "not a list"}', "application/json", 400, "\"images\" is a string, not a list"),
    (b'{"images": []}', "application/json", 400, "holds 0 images: send 1 to 64"),
    (json.dumps({"images": ["aGVsbG8="] * 65}).encode(), "application/json", 400, "holds 65 images"),
    (b'{"images": ["%%%"]}', "application/json", 400, "images[0] is not base64"),
    (b'{"images": ["aGVsbG8="]}', "application/json", 400, "images[0]: not an image"),
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"[" * 100_000, "application/json", 400, "nested deeper than 8 levels"),  # was a RecursionError: 500
])
def test_garbage_is_refused_with_a_reason_and_the_server_keeps_serving(server, trained_models, body, content_type,
                                                                       status, reason):
    got, answer = request(server.url + "/score", body, content_type)
    assert got == status and reason in answer["error"], answer
    image = next((trained_models["data"] / "test").rglob("*.png"))
    assert request(server.url + "/score", image.read_bytes())[0] == 200


def test_a_bad_top_is_400(server, trained_models):
    image = next((trained_models["data"] / "test").rglob("*.png")).read_bytes()
    assert request(server.url + "/score?top=x", image)[0] == 400
    assert request(server.url + "/score?top=0", image)[0] == 400


def test_serve_refuses_a_missing_model_or_a_busy_port_with_one_line(trained_models, tmp_path):
    assert_user_error(run_train("serve", tmp_path / "none.pt"), "no model file at")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_user_error(run_train("serve", trained_models["tutorial"], "--port", str(port)), f"port {port}",
                          "is in use")
