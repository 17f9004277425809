#!/usr/bin/env python3
"""Write docs/flags.md from the parsers themselves (make docs), so the flags table cannot drift from `train --help`.

    python scripts/docs/flags.py            # rewrite docs/flags.md
    python scripts/docs/flags.py --check    # exit 1 if docs/flags.md is not what this would write (the tests do)
"""

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / "docs" / "flags.md"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(action) -> str:
    if action.default in (None, argparse.SUPPRESS) or isinstance(action, argparse._HelpAction):
        return ""
    if action.default is False:
        return "off"
    return f"`{action.default}`"


def flag_tables(parser: argparse.ArgumentParser) -> list[str]:
    lines = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        lines += [f"**{group.title}**", "", "| flag | default | what it does |", "| --- | --- | --- |"]
        for a in actions:
            names = ", ".join(f"`{o}`" for o in a.option_strings) or f"`{a.dest}` (positional)"
            choices = f" One of: {', '.join(map(str, a.choices))}." if a.choices else ""
            lines.append(f"| {names} | {_default(a)} | {_cell(a.help or '')}{choices} |")
        lines.append("")
    return lines


def render() -> str:
    sys.path.insert(0, str(REPO / "src"))
    from trainjob import config, evaluate, export, predict, serve
    from trainjob.recipes import RECIPES

    out = ["# Flags", "", "Generated from the argument parsers (`src/trainjob/config.py` and the subcommands) by "
           "`make docs`; `tests/test_docs.py` fails when this file is stale. `train --help` prints the same.", "",
           "## `train`: training", ""]
    out += flag_tables(config.build_parser())
    out += ["## What each recipe sets", "",
            "Flags left out take the recipe's value (one source: each recipe's `Hyperparameters` in "
            "`src/trainjob/recipes/`);"
            " a blank cell is a setting that recipe does not have, and giving it is refused with one line.", "",
            "| setting | " + " | ".join(f"`--recipe {name}`" for name in RECIPES) + " |",
            "| --- |" + " --- |" * len(RECIPES)]
    for name in config.RECIPE_DEFAULTED:
        values = (config.recipe_defaults(r).get(name, "") for r in RECIPES.values())
        out.append(f"| `--{name}` | " + " | ".join(_cell(v) for v in values) + " |")
    out.append("")
    for title, module in (("train predict", predict), ("train evaluate", evaluate), ("train export", export),
                          ("train serve", serve)):
        out += [f"## `{title}`", ""] + flag_tables(module.build_parser())
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="compare instead of writing")
    text = render()
    if p.parse_args().check:
        if not TARGET.is_file() or TARGET.read_text() != text:
            print(f"{TARGET.relative_to(REPO)} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(text)
    print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
