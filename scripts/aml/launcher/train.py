"""Azure ML entry script: run the trainer installed in the image, the same code `docker run IMAGE ...` runs.

Azure ML snapshots this folder and starts `/opt/venv/bin/python train.py --data_path <mount> ...` in the container.
The trainer is called in-process, so Azure ML's run context (Run.get_context(), ./outputs upload) wraps it. This
folder holds no trainjob sources on purpose: the image's installed package is the only copy that runs.
"""

import sys

from trainjob.cli import main

if __name__ == "__main__":
    sys.exit(main())
