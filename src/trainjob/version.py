"""Which code produced a result, recorded with it (summary.json, model.pt, the ONNX metadata): a package version
alone cannot tell two commits apart."""

import functools
import os
import subprocess
from pathlib import Path

from trainjob import contract

GIT_TIMEOUT_S = 5  # a hung or huge filesystem must not hold a finished run back from writing its results
UNKNOWN = "unknown"  # what docker/Dockerfile records when the build was given no revision
# Set inside git hooks (a test run from pre-commit): they would point git at another repository or index.
GIT_LOCATION_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")


@functools.cache  # pinned at the first call: a commit or an edit made while a long run trains is not its code
def code_version() -> str:
    """The image's build revision (contract.ENV_REVISION), else `git rev-parse HEAD` of the checkout this package
    runs from, with "-dirty" when tracked files differ from it, else "unknown-<package version>"."""
    baked = os.environ.get(contract.ENV_REVISION, "").strip()
    if baked and baked != UNKNOWN:
        return baked
    from trainjob import __version__

    return _git_revision(Path(__file__).resolve().parents[2]) or f"{UNKNOWN}-{__version__}"


def _git_revision(root: Path) -> str | None:
    # Only a source checkout (root/src/trainjob): an installed copy's parents are site-packages, and must not claim
    # the commit of whatever repository a virtualenv happens to sit in.
    if not (root / ".git").exists():
        return None
    head = _git(root, "rev-parse", "--verify", "HEAD")
    if head is None:
        return None
    # Untracked files do not count, as in `git describe --dirty`: a scratch file must not mark every run dirty.
    changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    return head if changes == "" else f"{head}-dirty"  # a status that failed cannot vouch for a clean tree


def _git(root: Path, *args: str) -> str | None:
    """git's stdout, stripped; None when git is missing, fails or times out."""
    env = {k: v for k, v in os.environ.items() if k not in GIT_LOCATION_VARS}
    try:
        # --no-optional-locks: status must not take the index lock from an editor or a git command running now.
        done = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL, env=env, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
