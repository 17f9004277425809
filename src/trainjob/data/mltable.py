"""The documented subset of Azure ML's MLTable format, read by hand: an `MLTable` YAML file whose `paths` name one
JSON Lines or CSV file beside it, read by `read_json_lines` or `read_delimited`.

Not the `mltable` package: in the image it would add only itself, but it is one more pin, its reader runs through
the azureml-dataprep (rslex) engine, and outside the image it brings 34 packages (82 MB of wheels: pyarrow, rslex).
An MLTable that uses more of the format is refused with one line naming what it used.
"""

from dataclasses import dataclass
from pathlib import Path

import yaml

from trainjob.data.detect import MANIFEST_SUFFIXES, MLTABLE, printable
from trainjob.errors import DataError

READERS = {"read_json_lines": "manifest-jsonl", "read_delimited": "manifest-csv"}
# AutoML's MLTables mark image_url as a stream (convert_column_types ... stream_info): a hint for its own reader,
# nothing for one that maps the URLs to files.
IGNORED = ("convert_column_types",)
MAX_BYTES = 1 << 20  # an MLTable file is a few lines of YAML
UTF8 = ("utf8", "utf-8", "utf8bom", "ascii")


@dataclass(frozen=True)
class Table:
    file: Path  # the one data file its paths name
    kind: str  # "manifest-jsonl" | "manifest-csv"
    delimiter: str = ","


def read(folder: Path) -> Table:
    """The data file an MLTable folder names and how to read it; DataError (one line) for anything else."""
    path = folder / MLTABLE
    shown = printable(str(path))
    try:
        if path.stat().st_size > MAX_BYTES:
            raise DataError(f"{shown} is over {MAX_BYTES >> 20} MB: expected a few lines of YAML (paths, "
                            "transformations); point paths at the data file instead of inlining it")
        spec = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {shown} ({getattr(e, 'strerror', None) or e}): expected a readable UTF-8 "
                        "YAML file; fix its permissions or the mount") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise DataError(f"{shown} is not valid YAML{where} ({getattr(e, 'problem', None) or 'unparsable'}): "
                        "expected `paths:` and `transformations:` as Azure ML writes them") from None
    if not isinstance(spec, dict):
        raise DataError(f"{shown} holds a YAML {type(spec).__name__}, not a mapping: expected `paths:` and "
                        "`transformations:` keys")
    file = _the_file(spec.get("paths"), folder, shown)
    kind, options = _reader(spec.get("transformations"), file, shown)
    delimiter = str(options.get("delimiter", "\t" if file.suffix.lower() == ".tsv" else ","))
    encoding = str(options.get("encoding", "utf8")).lower()
    if encoding not in UTF8 or options.get("header", "all_files_same_headers") == "no_header" or len(delimiter) != 1:
        raise DataError(f"{shown}: reader options {printable(repr(options))[:120]} are outside what trainjob reads "
                        "(UTF-8, a header row, a one-character delimiter): re-export the file so")
    return Table(file, kind, delimiter)


def _the_file(paths, folder: Path, shown: str) -> Path:
    """paths: exactly one `- file: NAME` beside (or below) the MLTable file."""
    entries = paths if isinstance(paths, list) else []
    if len(entries) != 1 or not isinstance(entries[0], dict) or not isinstance(entries[0].get("file"), str):
        found = f"{len(entries)} entries" if entries else repr(paths)[:80]
        raise DataError(f"{shown}: paths must name one data file (`paths: [{{file: ./train.jsonl}}]`), found "
                        f"{found}: trainjob reads one file; `folder:` and `pattern:` paths are not read")
    name = entries[0]["file"]
    relative = name.removeprefix("file://")
    if "://" in relative:
        raise DataError(f"{shown}: paths names {printable(name)}, a URL: the MLTable's data file must sit beside "
                        "it (a relative path such as ./train.jsonl), as an MLTable data asset is mounted")
    file = (folder / relative).resolve()
    if not file.is_relative_to(folder.resolve()):
        raise DataError(f"{shown}: paths names {printable(name)}, outside the MLTable's folder: put the data file "
                        "beside the MLTable file")
    if not file.is_file():
        raise DataError(f"{shown}: paths names {printable(name)}, which is not a file in {printable(str(folder))}: "
                        "upload the data file with its MLTable, or fix the name")
    return file


def _reader(transformations, file: Path, shown: str) -> tuple[str, dict]:
    """The manifest kind to read the file as (a read_* transformation, else its extension) and that step's options."""
    steps = transformations if isinstance(transformations, list) else ([] if transformations is None else [None])
    kind, options = None, {}
    for step in steps:
        name, value = None, None
        if isinstance(step, str):  # `- read_json_lines` with no options
            name = step
        elif isinstance(step, dict) and len(step) == 1:  # `- read_json_lines: {encoding: utf8}`
            [(name, value)] = step.items()
        if name in READERS and kind is None:
            kind, options = READERS[name], value if isinstance(value, dict) else {}
        elif name not in IGNORED:
            raise DataError(f"{shown}: transformation {printable(repr(step))[:80]} is not in the subset trainjob "
                            f"reads ({', '.join([*READERS, *IGNORED])}, once each): remove it, or read the file "
                            "itself with --data_path")
    kind = kind or MANIFEST_SUFFIXES.get(file.suffix.lower())
    if kind is None:
        raise DataError(f"{shown}: no read_json_lines or read_delimited transformation, and {file.name} is not a "
                        ".jsonl or .csv file: add the transformation that reads it")
    return kind, options
