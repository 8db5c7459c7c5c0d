"""Sweep config (Hydra), planning, Ray scheduling, MLflow tracking and the `attnsweep` CLI.

Never imports triton: the driver must start fast and run on a machine without a GPU.
"""
