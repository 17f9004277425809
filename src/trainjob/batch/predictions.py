"""The predictions file of batch scoring: one row per image, CSV or JSON Lines, appended chunk by chunk.

Resumable and safe: every chunk's rows go to the file in one write, then flush and fsync, so a stopped run
(SIGTERM, SIGKILL, preemption) keeps every finished row; a rerun with the same --output reads the paths already
there, drops a last line that a kill cut short, and scores only the rest (no duplicate rows). A file that is not a
predictions file of the same shape (another --top, another format, something else entirely) is refused, never
overwritten.

CSV columns: path, class_1, probability_1, ..., class_K, probability_K, error (K = --top; a row with an error has
empty class columns). JSON Lines: {"path": ..., "top": [{"class": ..., "probability": ...}, ...], "error": null}.
"""

import csv
import fcntl
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from trainjob.atomic import append_whole
from trainjob.data.detect import printable
from trainjob.errors import UserError

FORMATS = {".csv": "csv", ".jsonl": "jsonl"}


@dataclass(frozen=True)
class Row:
    path: str  # inputs.row_path of the file
    top: list[tuple[str, float]] | None  # best first; None when the file could not be scored
    error: str | None = None  # why not


def header(top: int) -> list[str]:
    columns = ["path"]
    for k in range(1, top + 1):
        columns += [f"class_{k}", f"probability_{k}"]
    return columns + ["error"]


def csv_cells(row: Row, top: int) -> list[str]:
    """One row as the cells of header(top): a row with an error has empty class columns."""
    cells = [row.path]
    ranked = row.top or []
    for k in range(top):
        cells += [ranked[k][0], f"{ranked[k][1]:.6f}"] if k < len(ranked) else ["", ""]
    return cells + [row.error or ""]


class PredictionsFile:
    """Open with open() (which says what is already done), append() each chunk, close() at the end."""

    def __init__(self, path: str, top: int):
        self.path, self.top = Path(path), top
        self.format = FORMATS.get(self.path.suffix.lower())
        if self.format is None:
            raise UserError(f"--output {printable(path)}: expected a .csv or .jsonl file name (the format is taken "
                            "from it)")
        self._fd: int | None = None
        self.written = 0  # rows this run

    def open(self) -> set[str]:
        """Create the file, or take up an earlier run's; the paths it already holds."""
        shown = printable(str(self.path))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as e:
            raise UserError(f"cannot write --output {shown} ({e.strerror or e}): pass a path in a writable "
                            "folder") from None
        self._fd = fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # two runs appending to one file would interleave rows
        except OSError:
            self.close()
            raise UserError(f"--output {shown} is being written by another train predict: wait for it to finish, "
                            "or pass another file") from None
        try:
            done, keep = self._read_existing()
        except UserError:
            self.close()
            raise
        if keep is not None and os.fstat(fd).st_size > keep:
            os.ftruncate(fd, keep)  # the last line was cut short by a kill: it is scored again
        if keep is None and self.format == "csv":
            self._write(self._csv_lines([header(self.top)]))
        return done

    def append(self, rows: list[Row]) -> None:
        if not rows:
            return
        if self.format == "csv":
            data = self._csv_lines([self._csv_row(r) for r in rows])
        else:
            data = "".join(json.dumps(self._json_row(r), ensure_ascii=False) + "\n" for r in rows)
        self._write(data)
        self.written += len(rows)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- writing ---
    def _write(self, text: str) -> None:
        """A chunk's rows in one write, fsynced; on a full disk none of them (atomic.append_whole)."""
        append_whole(self._fd, text.encode("utf-8"), self.path, sync=True,
                     then="free some space there and run the same command again (it goes on after the rows written)")

    @staticmethod
    def _csv_lines(rows: list[list]) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        return out.getvalue()

    def _csv_row(self, row: Row) -> list:
        return csv_cells(row, self.top)

    @staticmethod
    def _json_row(row: Row) -> dict:
        top = [{"class": c, "probability": round(p, 6)} for c, p in row.top] if row.top is not None else None
        return {"path": row.path, "top": top, "error": row.error}

    # --- resuming ---
    def _read_existing(self) -> tuple[set[str], int | None]:
        """(paths already written, the byte length of the whole lines to keep); (empty, None) for a new file."""
        parts, offset = [], 0
        while part := os.pread(self._fd, 1 << 20, offset):
            parts.append(part)
            offset += len(part)
        data = b"".join(parts)
        if not data:
            return set(), None
        keep = data.rfind(b"\n") + 1  # a last line without its newline was being written when the run was killed
        try:
            text = data[:keep].decode("utf-8")
            done = self._csv_done(text) if self.format == "csv" else self._jsonl_done(text)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, csv.Error) as e:
            raise UserError(f"--output {printable(str(self.path))} exists and is not a predictions file of "
                            f"{self.format} with --top {self.top} ({e}): pass a new file name, or delete it to start "
                            "over (it was left as it is)") from None
        return done, keep

    def _csv_done(self, text: str) -> set[str]:
        rows = list(csv.reader(io.StringIO(text)))
        if not rows:
            raise ValueError("no header line")
        if rows[0] != header(self.top):
            found = ",".join(rows[0])[:80]
            raise ValueError(f"its header is {found!r}")
        if any(len(r) != len(rows[0]) for r in rows[1:]):
            raise ValueError("a row has the wrong number of columns")
        return {r[0] for r in rows[1:]}

    def _jsonl_done(self, text: str) -> set[str]:
        done = set()
        for line in text.splitlines():
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row["path"], str) or "top" not in row:
                raise ValueError("a line is not a {\"path\", \"top\", \"error\"} object")
            if row["top"] is not None and len(row["top"]) > self.top:
                raise ValueError(f"a row holds {len(row['top'])} classes")
            done.add(row["path"])
        return done
