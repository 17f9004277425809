"""The documentation holds: README short, every flag documented, every relative link resolving, flags.md current."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_readme_is_short_enough_to_read_first():
    assert len((ROOT / "README.md").read_text()) <= 12_000


def test_flags_md_is_what_the_parsers_generate():
    result = subprocess.run([sys.executable, ROOT / "scripts/docs/flags.py", "--check"], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_every_flag_train_help_lists_is_documented():
    from trainjob.config import build_parser

    text = "\n".join(page.read_text() for page in PAGES)
    flags = [o for a in build_parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    assert len(flags) >= 28
    missing = [f for f in flags if not re.search(re.escape(f) + r"\b", text)]
    assert not missing, f"not in README.md or docs/: {missing}"


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert len(PAGES) > 5 and not broken, broken


def test_the_serve_body_limit_in_the_help_and_the_docs_is_the_one_the_code_applies():
    from trainjob import contract, serve

    said = f"{contract.DEFAULT_SERVE_MAX_BYTES / 1e6:g} MB"  # the docs are prose: they cannot import the constant
    assert said in serve.build_parser().format_help()
    for page in (ROOT / "README.md", ROOT / "docs" / "serving.md"):
        lines = [ln for ln in page.read_text().splitlines() if contract.ENV_SERVE_MAX_BYTES in ln]
        assert any(said in ln for ln in lines), (page.name, lines)  # where the default is given, it is this one
