"""Video decoding, backbones (R(2+1)D, S3D) and feature extraction (mmp-extract-features)."""
