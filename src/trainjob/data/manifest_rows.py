"""A manifest's rows as written: a CSV's (path,label[,split]) or Azure ML's JSON Lines ({"image_url": ...,
"label": ...}). Malformed text is one DataError line naming the file, the line and the fix; what each row names is
manifest.py's to check."""

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from trainjob.data.detect import printable
from trainjob.errors import DataError

IMAGE_COLUMNS = ("path", "image", "file", "filename", "image_url")  # first found wins
LABEL_COLUMNS = ("label", "class")
JSONL_KEYS = ("image_url", "label")  # Azure ML's (AutoML for images, Data Labeling's export)
SPLIT_COLUMN = "split"
MAX_BYTES = 1 << 30  # read whole: a million rows is ~100 MB
JSONL_EXAMPLE = '{"image_url": "azureml://datastores/NAME/paths/cat/1.jpg", "label": "cat"}'


@dataclass
class Row:
    line: int  # in the file, for messages
    image: str  # as written: a relative path, an absolute one, or a URL
    label: str
    split: str  # "" when the manifest has no split


def read_text(file: Path, name: str) -> str:
    try:
        if file.stat().st_size > MAX_BYTES:
            raise DataError(f"manifest {name} is over {MAX_BYTES >> 30} GB: expected one row per image; split it")
        return file.read_text(encoding="utf-8-sig")  # -sig: Excel's CSVs start with a byte-order mark
    except UnicodeDecodeError as e:
        raise DataError(f"manifest {name} is not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except OSError as e:
        raise DataError(f"cannot read manifest {name} ({e.strerror or e}): fix its permissions or the mount") from None


def csv_rows(text: str, name: str, columns: str | None, delimiter: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            raise DataError(f"manifest {name} is empty: expected a header (e.g. path,label) and one row per image")
        image, label, split = _columns([h.strip().lower() for h in header], header, name, columns)
        rows = []
        for fields in reader:
            if any(f.strip() for f in fields):  # blank lines are not rows
                rows.append(Row(reader.line_num, _cell(fields, image), _cell(fields, label),
                                _cell(fields, split).lower()))
    except csv.Error as e:
        raise DataError(f"manifest {name} line {reader.line_num} is not valid CSV ({e}): fix or re-export it") \
            from None
    return rows


def _cell(fields: list[str], i: int | None) -> str:
    """A row's value in column i; "" for a short row (a missing label is an empty label, skipped and counted)."""
    return fields[i].strip() if i is not None and i < len(fields) else ""


def _columns(names: list[str], header: list[str], name: str, columns: str | None) -> tuple[int, int, int | None]:
    """The image, label and split columns' positions, by --columns or the known names."""
    shown = ", ".join(printable(h) for h in header[:12]) + (" ..." if len(header) > 12 else "")
    split = names.index(SPLIT_COLUMN) if SPLIT_COLUMN in names else None
    if columns:
        wanted = [c.strip().lower() for c in columns.split(",")]
        missing = [c for c in wanted if c not in names]
        if missing:
            raise DataError(f"--columns {printable(columns)}: manifest {name} has no column {printable(missing[0])}; "
                            f"its header is: {shown}; name its image and label columns, --columns IMAGE,LABEL")
        return names.index(wanted[0]), names.index(wanted[1]), split
    image = next((names.index(c) for c in IMAGE_COLUMNS if c in names), None)
    label = next((names.index(c) for c in LABEL_COLUMNS if c in names), None)
    if image is None or label is None:
        what = "image and label columns" if image is None and label is None else \
            ("image column" if image is None else "label column")
        raise DataError(f"manifest {name} has no {what}: its header is: {shown}; expected an image column named "
                        f"{', '.join(IMAGE_COLUMNS)} and a label column named {' or '.join(LABEL_COLUMNS)}, or "
                        "--columns IMAGE,LABEL naming yours")
    return image, label, split


def jsonl_rows(text: str, name: str, columns: str | None) -> list[Row]:
    image_key, label_key = [c.strip() for c in columns.split(",")] if columns else JSONL_KEYS
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 may sit inside a string
        if not line.strip():
            continue
        where = f"manifest {name} line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where} is not JSON ({e.msg}): expected one object per line, {JSONL_EXAMPLE}") \
                from None
        if not isinstance(item, dict) or image_key not in item or label_key not in item:
            found = f"keys {', '.join(printable(k) for k in list(item)[:8])}" if isinstance(item, dict) else \
                f"a JSON {type(item).__name__}"
            raise DataError(f"{where} has no {image_key!r} and {label_key!r} (found {found}): expected "
                            f"{JSONL_EXAMPLE}, or --columns IMAGE,LABEL naming its keys")
        image = item[image_key]
        if not isinstance(image, str):
            raise DataError(f"{where}: {image_key} is a JSON {type(image).__name__}, expected a path or URL string")
        split = item.get(SPLIT_COLUMN)
        rows.append(Row(number, image.strip(), _label(item[label_key], where), str(split or "").strip().lower()))
    return rows


def _label(value, where: str) -> str:
    """A class name from a JSON value; a list of labels is multi-label data, which a classifier of one label per
    image cannot train on: refused rather than guessed."""
    if isinstance(value, list):
        raise DataError(f"{where} gives a list of labels {printable(repr(value))[:60]}: multi-label data is not "
                        "supported, trainjob trains one label per image; export it as multi-class")
    if isinstance(value, str):
        return value.strip()
    if value is None:
        return ""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DataError(f"{where}: the label is a JSON {type(value).__name__}, expected a class name")
