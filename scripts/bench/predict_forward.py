#!/usr/bin/env python3
"""The bare forward of `make bench-predict`, run in its own process: a model's scoring alone, on images already
decoded, set up exactly as `train predict` sets it up (trainjob.inference.Classifier with --precision auto, torch
threads at the CPU quota, the same chunk size), so `train predict`'s rate over this one is what decoding the files
and writing the rows cost.

    python scripts/bench/predict_forward.py MODEL FOLDER --images N [--chunk 16] [--seconds 5]

Decodes the first N files of FOLDER (sorted, as predict walks it) once, untimed, at the model's image size (the
benchmark passes the number of distinct photos: the scoring folder repeats them); scores one chunk to warm up; then
scores the decoded chunks over and over until at least --seconds have passed (one pass at the least). Prints one
JSON line: images, seconds, images_per_s, engine, threads.

Also: host_facts(), the CPU line every table of this benchmark carries.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
from bench.bench_fast import NATIVE_BF16, cpu_flags, cpu_model, host_name  # noqa: E402


def host_facts() -> dict:
    """The CPU's name, its cores and which native bf16 paths it has (what --precision auto decides on)."""
    words, model = cpu_flags(), cpu_model()
    return {"cpu": model, "cpus": os.cpu_count(), "bf16_flags": [f for f in NATIVE_BF16 if f in words],
            "host": host_name(words, model)}


def decoded_chunks(classifier, folder: Path, images: int, chunk: int) -> list:
    """The first `images` files of folder, decoded as predict decodes them, in chunks of `chunk`."""
    import torch

    from trainjob.batch.inputs import gather
    from trainjob.data.decode import decode_chunk

    paths = gather([str(folder)], None).paths[:images]
    out = []
    for start in range(0, len(paths), chunk):
        pixels, failed = decode_chunk(paths[start:start + chunk], classifier.image_size)
        if failed:
            sys.exit(f"error: cannot decode {paths[start + failed[0][0]]}: {failed[0][1]}")
        out.append(torch.from_numpy(pixels))
    return out


def forward_rate(model: str, folder: Path, images: int, chunk: int, seconds: float) -> dict:
    import torch

    from trainjob.inference import Classifier
    from trainjob.runtime import cpu_quota

    classifier = Classifier(model, "auto")  # predict's default
    chunks = decoded_chunks(classifier, folder, images, chunk)
    torch.set_num_threads(cpu_quota())  # as predict's main() does, after loading the model
    classifier.probabilities(chunks[0])  # warm-up: first-call allocations and kernel choices
    done, started = 0, time.perf_counter()
    while True:
        for batch in chunks:
            classifier.probabilities(batch)
            done += len(batch)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    return {"images": done, "seconds": elapsed, "images_per_s": done / elapsed, "engine": classifier.describe(),
            "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="model.pt or model.onnx")
    p.add_argument("folder", type=Path, help="the scoring folder (bench_predict.py builds it)")
    p.add_argument("--images", type=int, required=True, help="how many files to decode (the distinct ones)")
    p.add_argument("--chunk", type=int, default=16, help="images per forward pass, as predict's --chunk (16)")
    p.add_argument("--seconds", type=float, default=5.0, help="score for at least this long")
    args = p.parse_args()
    print(json.dumps(forward_rate(args.model, args.folder, args.images, args.chunk, args.seconds)), flush=True)


if __name__ == "__main__":
    main()
