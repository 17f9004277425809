"""Azure ML batch deployment scoring script: the one in the image (trainjob/batch/azureml.py), so a batch endpoint
scores exactly as `train predict` does. Azure ML uploads this folder and its batch driver calls init() once per
worker, then run(mini_batch) with the paths of each mini-batch's files; the image provides trainjob and the model is
mounted at $AZUREML_MODEL_DIR."""

from trainjob.batch.azureml import init, run  # noqa: F401 - the batch driver looks these two up by name
