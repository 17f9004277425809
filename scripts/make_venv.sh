#!/usr/bin/env bash
# Create the project virtualenv with every package pinned by constraints.txt (make venv).
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
"$python" -m venv "$venv"
# azureml-dataprep needs pip >= 25.3 to resolve.
"$venv/bin/pip" install --quiet --upgrade "pip>=25.3"
"$venv/bin/pip" install --quiet -c constraints.txt -e ".[azure,control,serve,dev]"
echo "ready: $venv ($("$venv/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
