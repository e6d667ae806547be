"""Data: one sample schema for image and text-only rows, webdataset shards, chat rendering, collation, mixing."""
