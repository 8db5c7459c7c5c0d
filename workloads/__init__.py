"""Attention variants (reference math + cost model), phases, and the measurement of one trial.

Importing this package is cheap (no torch, no triton): the orchestrator plans with it on a driver
that may have no GPU. torch is imported by the modules that run trials; triton only by the
`triton` backend, after it has decided whether Triton must run in its CPU interpreter.
"""

from workloads.trial import DTYPES, PHASES, Trial, TrialResult

__all__ = ["DTYPES", "PHASES", "Trial", "TrialResult"]
