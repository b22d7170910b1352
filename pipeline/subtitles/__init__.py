"""mmp-align: subtitle cleaning (clean), one timeline across languages (align) and the stage that writes DATA/aligned/ (stage)."""
