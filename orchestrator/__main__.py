"""`python -m orchestrator`: the `attnsweep` CLI (what `attnsweep submit` runs on a cluster)."""

import sys

from orchestrator.cli import main

sys.exit(main())  # main() fixes cuBLAS's workspace before anything can start CUDA
