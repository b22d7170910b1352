"""mmp-import: the published Multi-HT100M and HowTo100M caption files (captions), their import into DATA/aligned/ (importer) and the released S3D features into DATA/mmp/ (s3d_features)."""
