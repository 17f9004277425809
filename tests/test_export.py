"""train export: one self-contained ONNX file per recipe that onnxruntime runs on raw uint8 images and that agrees
with `train predict` (the real CLI) on real decoded images."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import REPO, assert_user_error, checkout_revision, run_train

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

RECIPES = ("tutorial", "fast", "transfer")


@pytest.fixture(scope="module")
def exported(trained_models, tmp_path_factory):
    """{recipe: (model.pt, model.onnx, what `train export` printed)}."""
    done = {}
    for recipe in RECIPES:
        onnx_path = tmp_path_factory.mktemp(f"onnx-{recipe}") / "classifier.onnx"
        result = run_train("export", trained_models[recipe], "--output", onnx_path)
        assert result.returncode == 0, result.stderr[-3000:]
        done[recipe] = (trained_models[recipe], onnx_path, result.stdout)
    return done


def test_every_recipe_exports_one_file_with_its_classes_and_size_in_the_metadata(exported):
    for recipe, (model_pt, onnx_path, printed) in exported.items():
        assert f"wrote {onnx_path}" in printed and "weights inside" in printed
        assert [p.name for p in onnx_path.parent.iterdir()] == ["classifier.onnx"]  # no .onnx.data beside it
        model = onnx.load(str(onnx_path))  # loads with no external data
        onnx.checker.check_model(model, full_check=True)
        meta = {p.key: p.value for p in model.metadata_props}
        saved = torch.load(model_pt, weights_only=True)
        assert json.loads(meta["classes"]) == ["cat", "dog", "ship"] == saved["classes"]
        assert int(meta["image_size"]) == saved["image_size"] == (64 if recipe == "transfer" else 32)
        assert meta["recipe"] == recipe
        [inp] = model.graph.input
        assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
        dims = inp.type.tensor_type.shape.dim
        assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, saved["image_size"], saved["image_size"]]


def test_summary_model_and_onnx_metadata_name_the_commit_of_this_checkout(exported):
    import trainjob

    expected = checkout_revision()
    if expected is None or not Path(trainjob.__file__).resolve().is_relative_to(REPO / "src"):
        pytest.skip("trainjob does not run from a git checkout here")
    model_pt, onnx_path, _ = exported["tutorial"]
    recorded = json.loads((model_pt.parent / "summary.json").read_text())["versions"]
    saved = torch.load(model_pt, weights_only=True)
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert recorded["code_version"] == saved["code_version"] == meta["code_version"] == expected
    assert recorded["trainjob"] == trainjob.__version__


def decoded_test_images(data: Path, size: int) -> tuple[list[Path], np.ndarray]:
    """Every test image, decoded exactly as predict decodes it."""
    from trainjob.predict import read_image

    paths = sorted((data / "test").rglob("*.*"))
    return paths, np.stack([read_image(str(p), size).numpy() for p in paths])


@pytest.mark.parametrize("recipe", RECIPES)
def test_onnxruntime_agrees_with_predict_on_every_test_image_at_batch_1_7_and_16(exported, trained_models, recipe):
    model_pt, onnx_path, _ = exported[recipe]
    size = torch.load(model_pt, weights_only=True)["image_size"]
    paths, images = decoded_test_images(trained_models["data"], size)
    assert len(paths) == 18
    # fp32 on both sides: predict's default on a bf16 CPU is bf16, which may swap two near-equal classes
    predicted = run_train("predict", model_pt, *paths, "--json", "--top", "3", "--precision", "fp32")
    assert predicted.returncode == 0, predicted.stderr
    top1 = [json.loads(line)["top"][0]["class"] for line in predicted.stdout.splitlines()]

    from trainjob.inference import load_model, tta_level, tta_logits
    from trainjob.preprocess import normalize

    model, saved = load_model(str(model_pt))
    with torch.inference_mode():  # with the model's test-time augmentation (the fast recipe's), as export has it
        x = normalize(torch.from_numpy(images), *map(tuple, saved["normalization"].values()))
        logits = tta_logits(model, x, tta_level(saved)).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    classes = json.loads(session.get_modelmeta().custom_metadata_map["classes"])
    for batch in (1, 7, 16):
        for start in range(0, len(paths), batch):
            chunk = images[start:start + batch]
            [scores] = session.run(["scores"], {"images": chunk})
            assert scores.shape == (len(chunk), 3)
            np.testing.assert_allclose(scores, logits[start:start + batch], rtol=1e-4, atol=1e-4)
            assert [classes[i] for i in scores.argmax(1)] == top1[start:start + batch]


def test_export_refuses_a_file_that_is_not_a_model_with_one_line(tmp_path):
    (tmp_path / "notes.pt").write_text("not a model")
    result = run_train("export", tmp_path / "notes.pt")
    assert_user_error(result, "is not a model.pt written by trainjob")
    assert not list(tmp_path.glob("*.onnx"))
    missing = run_train("export", tmp_path / "nowhere" / "model.pt")
    assert_user_error(missing, "no model file at")


def test_export_where_no_file_can_be_written_is_one_line_and_leaves_no_partial_file(exported, tmp_path):
    (tmp_path / "a-file").write_text("x")  # its "folder" can't exist: fails for root too
    result = run_train("export", exported["tutorial"][0], "--output", tmp_path / "a-file" / "m.onnx")
    assert_user_error(result, "cannot write", "pass --output in a writable folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
