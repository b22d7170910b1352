"""The MMP model, its losses, training and retrieval evaluation (mmp-train, mmp-eval)."""
