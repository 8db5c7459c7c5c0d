"""A test-only variant that misbehaves on command, for the fault-injection tests (never shipped).

Loaded into every process, Ray workers included, through ATTNSWEEP_PLUGINS=tests.fault_variant
(tests/conftest.py sets it before Ray starts). Its parameters say what the first `times` calls of
a trial do (every call when times=0); later calls return q like action ok:

    action: ok (return q), sleep (sleep `seconds`, then return q), raise (RuntimeError),
            exit (the worker process dies at once, as under SIGKILL), oom (a CUDA out-of-memory error)
    marker: a directory; each misbehaving call appends a line
            "<action> pid=<pid> gpus=<...> cublas=<CUBLAS_WORKSPACE_CONFIG> t=<time>"
            to <marker>/<action>-n<seq_len>.log, so a retry of the trial can behave differently
"""

import os
import time
from pathlib import Path

import torch

from workloads.variants.base import Cost, TokenInput, Variant, dtype_size

ACTIONS = ("ok", "sleep", "raise", "exit", "oom")


def marker_file(marker: str, action: str, seq_len: int) -> Path:
    return Path(marker) / f"{action}-n{seq_len}.log"


def _misbehave(trial, inputs):
    params = trial.param_dict
    action = params["action"]
    log = marker_file(params["marker"], action, trial.seq_len) if params["marker"] else None
    if params["times"]:
        done = len(log.read_text().splitlines()) if log is not None and log.exists() else 0
        if done >= params["times"]:
            return inputs["q"]
    if log is not None:
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG", "")  # what a trial's CUDA start would read
        with log.open("a") as out:
            out.write(f"{action} pid={os.getpid()} gpus={gpus} cublas={cublas} t={time.time():.3f}\n")
    if action == "sleep":
        time.sleep(params["seconds"])
    elif action == "raise":
        raise RuntimeError("injected fault")
    elif action == "exit":
        os._exit(17)
    elif action == "oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB (injected)")
    return inputs["q"]


class FaultVariant(Variant):
    name = "test-fault"
    summary = "test only: returns q, or sleeps, raises, exits or runs out of memory on command"
    param_defaults = {"action": "ok", "seconds": 0.0, "times": 0, "marker": ""}
    implementations = {("torch-ref", "prefill"): _misbehave}

    def validate_params(self, params: dict) -> None:
        if params["action"] not in ACTIONS:
            raise ValueError(f"action: {params['action']!r} is not one of {', '.join(ACTIONS)}")

    def reference(self, trial, inputs):
        return inputs["q"]

    def input_specs(self, trial):
        return [TokenInput("q", (trial.n_heads, trial.head_dim))]

    def cost(self, trial) -> Cost:
        size = trial.batch * trial.n_heads * trial.seq_len * trial.head_dim * dtype_size(trial.dtype)
        return Cost(flops=0.0, bytes_moved=2.0 * size, n_params=0, kv_bytes_per_token=0)


VARIANT = FaultVariant()
