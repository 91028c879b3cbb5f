"""The storage layer: WAL, Parquet segments, manifest, codecs, the writer lock."""
