"""Azure ML online endpoint scoring script: the one in the image (trainjob/score.py), so the endpoint scores exactly
as `train serve` and `train predict` do. Azure ML uploads this folder and its inference server loads this file; the
image provides trainjob and the model is mounted at $AZUREML_MODEL_DIR."""

from trainjob.score import init, run  # noqa: F401 - the server looks these two up by name
