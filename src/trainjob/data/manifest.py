"""Manifests: labelled images listed in a file rather than sorted into class folders. A Kaggle-style CSV
(path,label[,split]), Azure ML's image-classification JSON Lines ({"image_url": ..., "label": ...}) and an MLTable
folder naming either. They list into the same Listing class folders do, so decoding, the cache, the seeded split and
the transfer recipe's streaming are the folders' own.

Rows are put in the folders' order (class, then path, sorted), not the file's: the seeded split and the training
order do not depend on how the rows were shuffled, and a manifest of a folder trains exactly as the folder does.
"""

import os
import re
import stat
from pathlib import Path
from urllib.parse import unquote

from trainjob.data import mltable
from trainjob.data.dataset import MAX_CLASSES
from trainjob.data.detect import Layout, has_image_extension, printable
from trainjob.data.listing import TEST, TRAIN, Listing, skip, stat_reason
from trainjob.data.manifest_rows import Row, csv_rows, jsonl_rows, read_text
from trainjob.errors import DataError
from trainjob.watchdog import beat

SPLITS = {"train": TRAIN, "test": TEST, "val": TEST}
# Azure storage URLs: (datastore or account/container, path inside it). The path is the file's place under the
# datastore's mount, which --image_root names.
AZUREML = re.compile(r"azureml://(?:subscriptions/[^/]+/resourcegroups/[^/]+/workspaces/[^/]+/)?datastores/"
                     r"([^/]+)/paths/(.*)", re.IGNORECASE)
AML_DATASTORE = re.compile(r"amldatastore://([^/]+)/(.*)", re.IGNORECASE)  # older Data Labeling exports
BLOB = re.compile(r"https://([^/.]+)\.(?:blob|dfs)\.core\.windows\.net/([^/?]+)/([^?]*)(?:\?.*)?", re.IGNORECASE)
URL = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def list_manifest(layout: Layout) -> Listing:
    """Every row's image file, checked and labelled; DataError (one line) for a manifest that cannot be read."""
    if layout.kind == "mltable":
        table = mltable.read(layout.path)
        file, kind, delimiter = table.file, table.kind, table.delimiter
    else:
        file, kind = layout.path, layout.kind
        delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
    name = printable(str(file))
    text = read_text(file, name)
    rows = csv_rows(text, name, layout.columns, delimiter) if kind == "manifest-csv" else \
        jsonl_rows(text, name, layout.columns)
    return _listing(rows, name, file.parent, _image_root(layout.image_root))


def _image_root(value: str | None) -> Path | None:
    if value is None:
        return None
    if not os.path.isdir(value):
        raise DataError(f"--image_root {printable(value)} is not a folder: expected the folder the manifest's "
                        "azureml:// or blob URLs map to (the datastore's mount; in an Azure ML job, its input)")
    return Path(value)


def _listing(rows: list[Row], name: str, base: Path, image_root: Path | None) -> Listing:
    splits = _split_codes(rows, name)
    if any(r.split == "test" for r in rows) and any(r.split == "val" for r in rows):
        rows = [r for r in rows if r.split != "val"]  # as with folders: test wins, val is left out
        test_split = f"the test rows of {name} (its val rows left out)"
    else:
        test_split = next((f"the {s} rows of {name}" for s in ("test", "val") if any(r.split == s for r in rows)),
                          None)
    classes = sorted({r.label for r in rows if r.label})
    _check_classes(classes, name)
    listing = Listing(classes=[printable(c) for c in classes], test_split=test_split, source=name)
    index = {c: i for i, c in enumerate(classes)}
    found, conflicts, stores = {}, set(), set()
    for row in rows:
        beat("listing a manifest's files")  # each row is a stat, maybe on a slow mount: progress, not a stall
        root, written, within = _locate(row, name, base, image_root, stores)
        if not row.label or not row.image:
            skip(listing, written or f"line {row.line}", "empty label" if row.image else "empty image path")
        else:
            _add(listing, found, conflicts, row, (root, written, within), index[row.label], splits[row.split])
    if len(stores) > 1:
        shown = ", ".join(printable(s) for s in sorted(stores)[:4])
        raise DataError(f"manifest {name} names images on {len(stores)} datastores ({shown}): --image_root maps "
                        "one; split the manifest by datastore, or copy the images to one")
    _reorder(listing, conflicts)
    return listing


def _split_codes(rows: list[Row], name: str) -> dict[str, int]:
    for row in rows:
        if row.split and row.split not in SPLITS:
            raise DataError(f"manifest {name} line {row.line}: split {printable(row.split)!r} is not train, test or "
                            "val: fix the value, or drop the split column to hold out --val_fraction")
    return {"": TRAIN, **SPLITS}


def _check_classes(classes: list[str], name: str) -> None:
    if len(classes) > MAX_CLASSES:
        raise DataError(f"manifest {name} names {len(classes)} classes, more than the {MAX_CLASSES} trainjob "
                        "trains: check that the label column is the class (--columns IMAGE,LABEL)")
    if len(classes) < 2:
        raise DataError(f"manifest {name} names {len(classes)} class(es) {[printable(c) for c in classes]}: a "
                        "classifier needs at least 2; check the label column (--columns IMAGE,LABEL)")


def _locate(row: Row, name: str, base: Path, image_root: Path | None, stores: set) -> tuple[Path, str, str]:
    """(the folder the image's path is relative to, that path, the folder in words): an Azure storage URL maps to
    --image_root, anything else is a path relative to the manifest's folder."""
    for pattern in (AZUREML, AML_DATASTORE, BLOB):
        match = pattern.fullmatch(row.image)
        if match:
            if image_root is None:
                raise DataError(f"manifest {name} line {row.line} names {printable(row.image)[:120]}, on Azure "
                                "storage: pass --image_root FOLDER, where that datastore is mounted (in an Azure "
                                "ML job, a uri_folder input of the datastore), to map its paths to files")
            stores.add("/".join(match.groups()[:-1]))
            return image_root, unquote(match.groups()[-1]), "--image_root"
    if URL.match(row.image):
        raise DataError(f"manifest {name} line {row.line} names {printable(row.image)[:120]}, a URL trainjob does not "
                        "read: expected a path relative to the manifest, or an azureml:// or "
                        "https://ACCOUNT.blob.core.windows.net/ URL mapped to files by --image_root")
    return base, row.image, "the manifest's folder"


def _add(listing: Listing, found: dict, conflicts: set, row: Row, located: tuple[Path, str, str], label: int,
         split: int) -> None:
    """One row's file, checked as a folder's files are, or skipped with the reason. found: real path -> (position,
    label, line) of its first row; conflicts: the positions of files that rows label differently."""
    root, written, within = located
    rel = os.path.normpath(written)
    real = os.path.realpath(os.path.join(root, written))  # realpath: a link that leads out of the folder is out
    top = os.path.realpath(root)
    if real != top and not real.startswith(top.rstrip(os.sep) + os.sep):
        skip(listing, written, f"outside {within} (not read)")
        return
    if real in found:
        first, first_label, line = found[real]
        if first_label == label:
            skip(listing, rel, f"listed again (first on line {line})")
        else:  # which label is right is unknown: every row of the file goes, each counted
            reason = f"labelled {listing.classes[first_label]!r} on line {line} and {listing.classes[label]!r} on " \
                f"line {row.line}"
            skip(listing, rel, reason)
            if first not in conflicts:
                skip(listing, rel, reason)
                conflicts.add(first)
        return
    try:
        st = os.stat(real)
    except OSError as e:
        skip(listing, rel, stat_reason(e, missing="file not found"))
        return
    if stat.S_ISDIR(st.st_mode):
        skip(listing, rel, "a folder, not an image file")
    elif not has_image_extension(written):
        skip(listing, rel, "not an image file extension")
    elif st.st_size == 0:
        skip(listing, rel, "empty file")
    else:
        found[real] = (len(listing.paths), label, row.line)
        listing.paths.append(real)
        listing.rels.append(printable(rel))
        listing.labels.append(label)
        listing.splits.append(split)
        # The label and split are part of a row's identity: relabelling a row must not reuse cached labels.
        key = os.fsencode(f"{split}\0{listing.classes[label]}\0{rel}")
        listing.identity.append((key, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))


def _reorder(listing: Listing, dropped: set[int]) -> None:
    """Leave out the files labelled twice, and put the rest in the folders' order: by class, then path (a path
    compared folder by folder, as a folder walk sorts)."""
    def key(i: int):
        return listing.labels[i], tuple(os.fsencode(part) for part in listing.rels[i].split(os.sep))

    order = sorted((i for i in range(len(listing.paths)) if i not in dropped), key=key)
    for name in ("paths", "rels", "labels", "splits", "identity"):
        values = getattr(listing, name)
        setattr(listing, name, [values[i] for i in order])


def empty_class(listing: Listing, label: int, split: int, skipped: list[dict]) -> str:
    """The message for a class left with no readable image (in train, or in the manifest's test rows)."""
    part = "train" if split == TRAIN else "test"
    found = f"{len(skipped)} rows skipped in all, e.g. {skipped[0]['path']} ({skipped[0]['reason']})" if skipped \
        else "its rows are all in the other split"
    return (f"class {listing.classes[label]!r} has no readable {part} image in manifest {listing.source} ({found}): "
            f"expected at least one readable image per class{' and split' if listing.test_split else ''}; fix its "
            "rows or the files they name")
