"""Reads result datasets (Parquet only) and turns them into reports. Imports neither torch nor triton."""
