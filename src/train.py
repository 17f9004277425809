"""The Azure ML tutorial's train.py, kept working: python src/train.py --data_path ./data --learning_rate 0.003
--momentum 0.92 (from the repo root, or from inside src/, which is what Azure ML runs as its snapshot)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the trainjob package beside this file

from trainjob.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
