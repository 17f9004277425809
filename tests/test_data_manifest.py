"""Labelled data as people export it: a CSV beside the images, Azure ML's JSON Lines with azureml:// URLs, an MLTable
folder. Each reads into the same images, labels and split as the class folders it describes; bad rows are skipped
and counted; a manifest that cannot be read is exit 2 with one line, through the real CLI."""

import concurrent.futures
import json
import os
import shutil
from pathlib import Path

import datagen
import loading
import pytest
import torch
from cli_runner import assert_user_error, run_train, summary, weights

from trainjob.batch import labelled

CLASSES = ("cat", "dog", "ship")
STORE = "workspaceblobstore"
LONG = f"azureml://subscriptions/sub/resourcegroups/rg/workspaces/ws/datastores/{STORE}/paths/"
SHORT = f"azureml://datastores/{STORE}/paths/"
MLTABLE_JSONL = """\
paths:
  - file: ./train_annotations.jsonl
transformations:
  - read_json_lines:
      encoding: utf8
      invalid_lines: error
      include_path_column: false
  - convert_column_types:
      - columns: image_url
        column_type: stream_info
"""


def load(path, **overrides):
    return loading.load(path, **{"val_fraction": 0.25, **overrides})


def load_error(path, **overrides) -> str:
    return loading.load_error(path, **{"val_fraction": 0.25, **overrides})


def images(root: Path, split: str | None = None, **kwargs) -> tuple[Path, list[Path]]:
    """root/store/data/<class>/*.png (the datastore's mount is root/store); the image paths relative to data/."""
    data = datagen.write_image_folders(root / "store" / "data", classes=CLASSES, split=split, **kwargs)
    return data, sorted(p.relative_to(data) for p in data.rglob("*.png"))


def write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def class_of(rel: Path) -> str:
    return rel.parts[-2]


def same_data(a, b) -> bool:
    return (a.classes == b.classes and torch.equal(a.train.inputs, b.train.inputs)
            and torch.equal(a.train.labels, b.train.labels) and torch.equal(a.test.inputs, b.test.inputs)
            and torch.equal(a.test.labels, b.test.labels))


# --- each format reads as the folders it describes -----------------------------------------------------------------
def test_a_csv_beside_the_images_reads_as_its_class_folders_whatever_the_row_order(tmp_path):
    data, rels = images(tmp_path)
    csv = write_csv(data / "labels.csv", "Filename,Label", [f"{r},{class_of(r)}" for r in reversed(rels)])
    folders, _ = load(data)
    ds, lines = load(csv)
    assert ds.format == "manifest-csv" and ds.classes == list(CLASSES)
    assert same_data(ds, folders), "same rows in another order: same split, same training order"
    assert ds.test_split == "held-out 25% per class (seed 0)" and ds.skipped == []
    assert f"found 48 image files listed in {csv} (3 classes)" in lines


def test_the_split_column_gives_the_test_set_and_val_is_left_out_beside_test(tmp_path):
    data, rels = images(tmp_path, split="test", per_class_train=4, per_class_test=2)
    rows = [f"{r},{class_of(r)},{'TEST' if r.parts[0] == 'test' else 'train'}" for r in rels]
    ds, _ = load(write_csv(tmp_path / "labels.csv", "image,class,split", [f"store/data/{row}" for row in rows]))
    folders, _ = load(data)
    assert ds.test_split == f"the test rows of {tmp_path / 'labels.csv'}" and same_data(ds, folders)
    val = [row.replace(",TEST", ",val") for row in rows if ",TEST" in row]
    ds, _ = load(write_csv(tmp_path / "more.csv", "image,class,split", [f"store/data/{row}" for row in rows + val]))
    assert ds.test_split.endswith("(its val rows left out)") and (len(ds.train), len(ds.test)) == (12, 6)
    only_val = [row.replace(",TEST", ",val") for row in rows]
    ds, _ = load(write_csv(tmp_path / "val.csv", "image,class,split", [f"store/data/{row}" for row in only_val]))
    assert ds.test_split == f"the val rows of {tmp_path / 'val.csv'}" and len(ds.test) == 6


def test_columns_names_the_image_and_label_columns(tmp_path):
    data, rels = images(tmp_path)
    csv = write_csv(data / "pets.csv", "id,picture,breed", [f"{i},{r},{class_of(r)}" for i, r in enumerate(rels)])
    ds, _ = load(csv, columns="Picture, breed")
    assert ds.classes == list(CLASSES) and len(ds.train) + len(ds.test) == 48


def test_azure_ml_json_lines_with_every_url_form_map_through_image_root(tmp_path):
    data, rels = images(tmp_path)
    forms = (LONG, SHORT, f"AmlDatastore://{STORE}/", "https://account.blob.core.windows.net/container/")
    for form in forms:
        rows = [{"image_url": f"{form}data/{r}", "image_details": {"format": "png", "width": "32px",
                                                                   "height": "32px"}, "label": class_of(r)}
                for r in rels]
        jsonl = write_jsonl(tmp_path / "labels" / "train.jsonl", rows)
        ds, _ = load(jsonl, image_root=str(tmp_path / "store"))
        assert ds.format == "manifest-jsonl" and same_data(ds, load(data)[0]), form


def test_json_lines_with_relative_paths_resolve_against_their_folder(tmp_path):
    data, rels = images(tmp_path)
    jsonl = write_jsonl(data / "train.jsonl", [{"image_url": str(r), "label": class_of(r)} for r in rels])
    ds, _ = load(jsonl)
    assert same_data(ds, load(data)[0])


@pytest.mark.parametrize("reader", ["jsonl", "csv"])
def test_an_mltable_folder_reads_the_file_its_paths_name(tmp_path, reader):
    data, rels = images(tmp_path)
    table = tmp_path / "table"
    if reader == "jsonl":  # AutoML for images' own MLTable: the JSON Lines file and azureml:// URLs
        write_jsonl(table / "train_annotations.jsonl",
                    [{"image_url": f"{LONG}data/{r}", "label": class_of(r)} for r in rels])
        (table / "MLTable").write_text(MLTABLE_JSONL)
    else:  # a tab-separated file beside its images, read by read_delimited
        shutil.copytree(tmp_path / "store", table / "store")
        write_csv(table / "labels.tsv", "path\tlabel", [f"store/data/{r}\t{class_of(r)}" for r in rels])
        (table / "MLTable").write_text("paths:\n  - file: labels.tsv\ntransformations:\n  - read_delimited:\n"
                                       "      delimiter: \"\\t\"\n      header: all_files_same_headers\n")
    ds, lines = load(table, image_root=str(tmp_path / "store"))
    assert ds.format == "mltable" and same_data(ds, load(data)[0])
    assert f"layout: mltable at {table}" in lines


def test_evaluate_reads_a_manifests_test_rows(tmp_path):
    data, rels = images(tmp_path, split="test", per_class_train=4, per_class_test=2)
    rows = [f"{r},{class_of(r)},{r.parts[0]}" for r in rels]
    data_set = labelled.load(str(write_csv(data / "labels.csv", "path,label,split", rows)), "auto", 0.1, 0)
    assert data_set.classes == list(CLASSES) and len(data_set.names) == 6
    assert all(name.startswith("test/") for name in data_set.names)


# --- the bad-data policy ---------------------------------------------------------------------------------------------
def test_bad_rows_are_skipped_and_counted_with_their_reason(tmp_path):
    data, rels = images(tmp_path)
    (tmp_path / "elsewhere.png").write_bytes((data / rels[0]).read_bytes())
    os.symlink(tmp_path / "elsewhere.png", data / "cat" / "link_out.png")
    (data / "cat" / "empty.png").write_bytes(b"")
    good = (data / rels[0]).read_bytes()
    (data / "cat" / "cut.png").write_bytes(good[: len(good) // 2])
    (data / "cat" / "notes.txt").write_text("hello")
    rows = [f"{r},{class_of(r)}" for r in rels] + [
        "cat/missing.png,cat", f"{rels[1]},", f"{rels[2]},cat", f"{rels[-1]},cat", "../elsewhere.png,cat",
        f"{tmp_path / 'elsewhere.png'},cat", "cat/link_out.png,cat", "cat/empty.png,cat", "cat/cut.png,cat",
        "cat/notes.txt,cat", ",dog"]
    ds, lines = load(write_csv(data / "labels.csv", "path,label", rows))
    reasons = {s["path"]: s["reason"] for s in ds.skipped}
    assert reasons == {
        "cat/missing.png": "file not found",
        str(rels[1]): "empty label",
        str(rels[2]): "listed again (first on line 4)",
        str(rels[-1]): "labelled 'ship' on line 49 and 'cat' on line 53",  # both rows
        "../elsewhere.png": "outside the manifest's folder (not read)",
        str(tmp_path / "elsewhere.png"): "outside the manifest's folder (not read)",
        "cat/link_out.png": "outside the manifest's folder (not read)",
        "cat/empty.png": "empty file",
        "cat/notes.txt": "not an image file extension",
        "line 60": "empty image path",
        "cat/cut.png": "corrupt or truncated image",
    }
    assert len(ds.train) + len(ds.test) == 47, "48 good rows less the one labelled twice"
    assert len(ds.skipped) == 12 and "12 skipped files" in lines[-2], "both rows of the file labelled twice"


def test_skipped_rows_are_counted_in_summary_json(tmp_path):
    data, rels = images(tmp_path, per_class_train=3, per_class_test=1)
    (data / "dog" / "broken.png").write_bytes(b"not a png")
    rows = [f"{r},{class_of(r)}" for r in rels] + ["cat/gone.png,cat", "dog/broken.png,dog", f"{rels[0]},cat"]
    out = tmp_path / "out"
    result = run_train("--data_path", write_csv(data / "labels.csv", "file,class", rows), "--output_dir", out,
                       "--epochs", "1", "--val_fraction", "0.25")
    assert result.returncode == 0, result.stderr[-3000:]
    dataset = summary(out)["dataset"]
    assert (dataset["format"], dataset["skipped_files"]) == ("manifest-csv", 3)
    assert {s["path"]: s["reason"] for s in dataset["skipped"]} == {
        "cat/gone.png": "file not found", str(rels[0]): "listed again (first on line 2)",
        "dog/broken.png": "not an image (format not recognised)"}
    assert "skipped 3 unreadable files: cat/gone.png (file not found)" in result.stdout


def test_azureml_urls_that_climb_out_of_image_root_are_skipped(tmp_path):
    data, rels = images(tmp_path)
    (tmp_path / "secret.png").write_bytes((data / rels[0]).read_bytes())
    rows = [{"image_url": f"{SHORT}data/{r}", "label": class_of(r)} for r in rels]
    rows.append({"image_url": f"{SHORT}../secret.png", "label": "cat"})
    rows.append({"image_url": f"{SHORT}data/cat/%63at_000.png", "label": "cat"})  # percent-encoded: a duplicate
    ds, _ = load(write_jsonl(tmp_path / "m.jsonl", rows), image_root=str(tmp_path / "store"))
    assert ds.skipped == [{"path": "../secret.png", "reason": "outside --image_root (not read)"},
                          {"path": "data/cat/cat_000.png", "reason": "listed again (first on line 1)"}]


def test_a_relabelled_row_is_not_served_from_the_cache(tmp_path):
    data, rels = images(tmp_path)
    cache = str(tmp_path / "cache")
    rows = [f"{r},{class_of(r)}" for r in rels]
    first, _ = load(write_csv(tmp_path / "store" / "labels.csv", "path,label", [f"data/{r}" for r in rows]),
                    cache_dir=cache)
    again, lines = load(tmp_path / "store" / "labels.csv", cache_dir=cache)
    assert any(line.startswith("cache hit") for line in lines) and same_data(first, again)
    rows[0] = rows[0].replace(",cat", ",dog")
    write_csv(tmp_path / "store" / "labels.csv", "path,label", [f"data/{r}" for r in rows])
    relabelled, lines = load(tmp_path / "store" / "labels.csv", cache_dir=cache)
    assert not any(line.startswith("cache hit") for line in lines)
    assert int((relabelled.train.labels == 1).sum() + (relabelled.test.labels == 1).sum()) == 17


def test_a_folder_holding_images_and_a_csv_points_at_the_csv(tmp_path):
    data, rels = images(tmp_path)
    kaggle = tmp_path / "kaggle"
    (kaggle / "images").mkdir(parents=True)
    for r in rels:
        shutil.copy(data / r, kaggle / "images" / r.name)
    write_csv(kaggle / "labels.csv", "file,label", [f"images/{r.name},{class_of(r)}" for r in rels])
    assert load_error(kaggle).endswith(f"a manifest is read when --data_path names it: --data_path "
                                       f"{kaggle / 'labels.csv'}")
    ds, _ = load(kaggle / "labels.csv")
    assert len(ds.train) + len(ds.test) == 48


# --- a manifest that cannot be read: exit 2, one line, through the real CLI -----------------------------------------
def _malformed(root: Path) -> dict[str, tuple[list[str], str]]:
    """{case: (train flags, a phrase its one error line must hold)}, all written under root."""
    data, rels = images(root, per_class_train=1, per_class_test=1)
    good = [{"image_url": f"{SHORT}data/{r}", "label": class_of(r)} for r in rels]
    local = [{"image_url": f"store/data/{r}", "label": class_of(r)} for r in rels]

    def csv(name, header, lines):
        return str(write_csv(root / name, header, lines))

    def jsonl(name, rows, raw=""):
        path = write_jsonl(root / name, rows)
        path.write_text(path.read_text() + raw)
        return str(path)

    def table(name, text, file="t.jsonl"):
        write_jsonl(root / name / file, [{"image_url": f"../store/data/{r}", "label": class_of(r)} for r in rels])
        (root / name / "MLTable").write_text(text)
        return str(root / name)

    store = ["--image_root", str(root / "store")]
    return {
        "no known columns": ([csv("a.csv", "id,breed", ["x.png,cat"])], "has no image and label columns: its "
                             "header is: id, breed; expected an image column named path, image, file, filename"),
        "no label column": ([csv("b.csv", "path,breed", ["x.png,cat"])], "has no label column"),
        "--columns not in the header": ([csv("c.csv", "path,label", ["x.png,cat"]), "--columns", "img,label"],
                                        "has no column img; its header is: path, label"),
        "--columns not two names": ([csv("d.csv", "path,label", ["x.png,cat"]), "--columns", "img"],
                                    "--columns must be two names, IMAGE,LABEL"),
        "empty csv": ([str(_empty(root / "e.csv"))], "is empty: expected a header"),
        "not utf-8": ([str(_latin1(root / "f.csv"))], "is not UTF-8 text"),
        "bad split": ([csv("g.csv", "path,label,split", [f"store/data/{rels[0]},cat,training"])],
                      "split 'training' is not train, test or val"),
        "one class": ([csv("h.csv", "path,label", [f"store/data/{r},cat" for r in rels])],
                      "names 1 class(es) ['cat']: a classifier needs at least 2"),
        "not json": ([jsonl("i.jsonl", good[:2], raw="{not json\n")], "line 3 is not JSON"),
        "not an object": ([jsonl("j.jsonl", [], raw="[1, 2]\n")], "has no 'image_url' and 'label' (found a JSON list)"),
        "multi-label": ([jsonl("k.jsonl", good[:2] + [{"image_url": "x.png", "label": ["cat", "dog"]}])],
                        "line 3 gives a list of labels ['cat', 'dog']: multi-label data is not supported"),
        "azureml without --image_root": ([jsonl("l.jsonl", good)], "pass --image_root FOLDER"),
        "two datastores": ([jsonl("m.jsonl", good + [{"image_url": "azureml://datastores/other/paths/x.png",
                                                      "label": "cat"}]), *store], "names images on 2 datastores"),
        "a URL it cannot read": ([jsonl("n.jsonl", local + [{"image_url": "http://example.com/a.png",
                                                             "label": "cat"}])], "a URL trainjob does not read"),
        "--image_root missing": ([jsonl("o.jsonl", good), "--image_root", str(root / "nowhere")],
                                 "is not a folder"),
        "--image_root with folders": ([str(data), *store], "--image_root applies to a manifest"),
        "every file of a class missing": ([csv("p.csv", "path,label", [f"store/data/{r},{class_of(r)}" for r in rels]
                                               + ["gone.png,zebra"])],
                                          "class 'zebra' has no readable train image"),
        "mltable not yaml": ([table("q", "paths: [unclosed\n")], "is not valid YAML"),
        "mltable folder path": ([table("r", "paths:\n  - folder: ./images\n")], "paths must name one data file"),
        "mltable unknown transformation": ([table("s", "paths:\n  - file: t.jsonl\ntransformations:\n"
                                                  "  - take: 10\n")], "is not in the subset trainjob reads"),
        "mltable file missing": ([table("t", "paths:\n  - file: gone.jsonl\n")], "names gone.jsonl, which is not a "
                                 "file"),
    }


def _empty(path: Path) -> Path:
    path.write_text("")
    return path


def _latin1(path: Path) -> Path:
    path.write_bytes("path,label\nchat_\xe9t\xe9.png,chat\n".encode("latin-1"))
    return path


CASES = ("no known columns", "no label column", "--columns not in the header", "--columns not two names", "empty csv",
         "not utf-8", "bad split", "one class", "not json", "not an object", "multi-label",
         "azureml without --image_root", "two datastores", "a URL it cannot read", "--image_root missing",
         "--image_root with folders", "every file of a class missing", "mltable not yaml", "mltable folder path",
         "mltable unknown transformation", "mltable file missing")


def _train_flags(flags: list[str], out: Path) -> list[str]:
    return ["--data_path", flags[0], "--output_dir", str(out), *flags[1:]]


@pytest.fixture(scope="module")
def malformed(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("malformed")
    cases = _malformed(root)
    assert set(cases) == set(CASES)
    return root, cases


@pytest.mark.parametrize("case", CASES)
def test_a_malformed_manifest_is_one_user_error_line(malformed, case):
    """In process, as the CLI parses and loads (the CLI itself: the slow test below)."""
    from trainjob import config
    from trainjob.data import load_dataset
    from trainjob.errors import UserError

    root, cases = malformed
    flags, phrase = cases[case]
    with pytest.raises(UserError) as info:
        cfg = config.parse_args(_train_flags(flags, root / "out"), environ={})
        load_dataset(cfg.data_path, image_size=32, val_fraction=0.1, seed=0, cache_dir="off", demo=False,
                     log=lambda line: None, columns=cfg.columns, image_root=cfg.image_root)
    assert "\n" not in str(info.value) and phrase in str(info.value)


def test_a_malformed_manifest_through_the_cli_is_exit_2_with_one_line(malformed):
    root, cases = malformed
    flags, phrase = cases["multi-label"]
    assert_user_error(run_train(*_train_flags(flags, root / "out-cli")), phrase)


@pytest.fixture(scope="module")
def malformed_runs(malformed):
    """Every malformed case through the real CLI, three at a time (each is a fresh interpreter)."""
    root, cases = malformed

    def run(name):
        out = root / "out" / name.replace(" ", "_").replace("/", "_")
        return name, run_train(*_train_flags(cases[name][0], out), timeout=120)

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, CASES))


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_every_malformed_manifest_through_the_cli_is_exit_2_with_one_line(malformed, malformed_runs, case):
    assert_user_error(malformed_runs[case], malformed[1][case][1])


# --- must show: folders, a CSV and Azure ML's JSON Lines train to the same test accuracy ----------------------------
@pytest.mark.slow
def test_folders_csv_and_json_lines_with_azureml_urls_train_the_transfer_recipe_to_the_same_accuracy(tmp_path):
    data, rels = images(tmp_path, per_class_train=8, per_class_test=4, size=[(48, 40), (40, 56)])
    for i, cls in enumerate(CLASSES):  # label noise, so that the accuracy falls short of 100% and equal means equal
        for k in range(2):
            (data / cls / f"{cls}_{k:03d}.png").rename(data / CLASSES[(i + 1) % 3] / f"from_{cls}_{k}.png")
    rels = sorted(p.relative_to(data) for p in data.rglob("*.png"))
    csv = write_csv(data / "labels.csv", "path,label", [f"{r},{class_of(r)}" for r in reversed(rels)])
    jsonl = write_jsonl(tmp_path / "labelling" / "export.jsonl",
                        [{"image_url": f"{LONG}data/{r}", "image_details": {"format": "png"}, "label": class_of(r)}
                         for r in rels[::2] + rels[1::2]])  # another row order again
    runs = {"folders": [data], "csv": [csv], "jsonl": [jsonl, "--image_root", tmp_path / "store"]}
    results, models = {}, {}
    for name, source in runs.items():
        out = tmp_path / f"out-{name}"
        result = run_train("--recipe", "transfer", "--image_size", "64", "--epochs", "4", "--val_fraction", "0.34",
                           "--seed", "7", "--data_path", *source[:1], "--output_dir", out, *source[1:])
        assert result.returncode == 0, (name, result.stderr[-3000:])
        results[name] = summary(out)
        models[name] = weights(out)
    print({name: s["test_accuracy"] for name, s in results.items()})
    formats = [s["dataset"]["format"] for s in results.values()]
    assert formats == ["image-folder-split", "manifest-csv", "manifest-jsonl"]
    for s in results.values():
        assert (s["dataset"]["train_images"], s["dataset"]["test_images"], s["dataset"]["skipped_files"]) == (24, 12, 0)
        assert s["dataset"]["classes"] == list(CLASSES)
    assert len({s["test_accuracy"] for s in results.values()}) == 1, results
    assert 1 / 3 < results["folders"]["test_accuracy"] < 1, "learned, short of the noisy labels: equal means equal"
    assert len({json.dumps(s["confusion_matrix"]) for s in results.values()}) == 1
    for name in ("csv", "jsonl"):
        assert all(torch.equal(models[name][k], models["folders"][k]) for k in models["folders"]), name
    # train evaluate reads the same JSON Lines through --image_root and redraws the held-out rows the run tested on
    scored = run_train("evaluate", tmp_path / "out-jsonl" / "model.pt", jsonl, "--image_root", tmp_path / "store",
                       "--split", "test", "--output_dir", tmp_path / "ev")
    assert scored.returncode == 0, scored.stderr[-3000:]
    evaluation = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert evaluation["images"] == 12
    # training scored features kept in float16; the whole model here scores unrounded ones (as test_evaluate.py)
    assert abs(evaluation["accuracy"] - results["jsonl"]["test_accuracy"]) <= 1 / 12
