"""The MMP model library: the model, the text encoder, losses, checkpoints and clip sampling; the trainer is in model.trainer."""
