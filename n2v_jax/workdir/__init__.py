"""A run on disk, shared by training and prediction: config.json, model.json, checkpoints."""
