"""Batch scoring: many image files in, one row of predictions per file out (`train predict --output`, `train
evaluate`, the Azure ML batch scoring script). inputs lists the files, stream scores them chunk by chunk,
predictions appends the rows; none of them imports a training module."""
