"""What a trained-phase trial (quality, prune) learns and how: its `Trial.quality` JSON, and running it.

`Trial.quality` holds {"task": name, "task_params": {...}, "train": {...}}: the task's parameters
except seq_len (the trial's seq_len is the task length) and the training settings except batch_size
(the trial's batch) and seed (the trial's seed). Defaults are filled in before the JSON is written, so
equal settings always give equal trial_ids.
"""

import dataclasses
import json
import math
import typing
from dataclasses import replace
from typing import Any

import torch

from workloads.quality.pruning import prune_greedily
from workloads.quality.tasks import TASKS, Task, check_task_params, make_task
from workloads.quality.train import TrainRecipe, TrainSettings, datasets, deterministic, train_variant
from workloads.trial import Trial, TrialResult, canonical_json

# The JSON's "train" keys: the recipe. What the trial gives, or only shapes the logged curve, is not.
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainRecipe))
CURVE_POINTS = 50  # logged points of the training curve, whatever the number of steps


def task_defaults(name: str) -> dict[str, Any]:
    """A task's parameters at their defaults, seq_len excluded (it is the trial's)."""
    fields = dataclasses.fields(TASKS[name])
    return {f.name: f.default for f in fields if f.name != "seq_len"}


def _typed(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Whole numbers given for float fields as floats, so `power_a=1` and `power_a=1.0` hash alike."""
    hints = typing.get_type_hints(cls)
    return {
        key: float(value)
        if hints.get(key) is float and isinstance(value, int) and not isinstance(value, bool)
        else value
        for key, value in values.items()
    }


def quality_json(task: str, task_params: dict[str, Any], train: dict[str, Any]) -> str:
    """Canonical `Trial.quality`; ValueError "key: reason" for an unknown task, key or type."""
    check_task_params(task, task_params)
    if "seq_len" in task_params:
        raise ValueError("seq_len: the task length is the sweep's seq_len axis, not a task parameter")
    unknown = sorted(set(train) - set(TRAIN_KEYS))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a training setting (known: {', '.join(TRAIN_KEYS)})")
    settings = _typed(TrainRecipe, {**TrainRecipe().recipe(), **train})
    task_params = _typed(TASKS[task], task_params)
    return canonical_json(
        {"task": task, "task_params": {**task_defaults(task), **task_params}, "train": settings}
    )


def trial_task(trial: Trial) -> Task:
    """The trial's task at its seq_len; ValueError when the parameters do not fit that length."""
    spec = json.loads(trial.quality)
    return make_task(spec["task"], **spec["task_params"], seq_len=trial.seq_len)


def train_settings(train: dict[str, Any], *, batch_size: int, seed: int) -> TrainSettings:
    """TrainSettings from the JSON's "train" part and the trial's batch and seed."""
    log_every = math.ceil(train["steps"] / CURVE_POINTS)
    return TrainSettings(**train, batch_size=batch_size, seed=seed, log_every=log_every)


def trial_settings(trial: Trial) -> TrainSettings:
    return train_settings(json.loads(trial.quality)["train"], batch_size=trial.batch, seed=trial.seed)


def run_trained(trial: Trial, device: torch.device, result: TrialResult) -> None:
    """Train the trial's TinyLM and score it; in phase prune, then remove heads greedily."""
    task, settings = trial_task(trial), trial_settings(trial)
    settings.check()
    # The layer is the variant's trainable reference math, as in phase train.
    layer_trial = replace(trial, phase="train", backend="torch-ref")
    model, outcome = train_variant(layer_trial, task, settings, device)
    result.task, result.accuracy, result.loss = task.name, outcome.accuracy, outcome.loss
    result.train_steps, result.model_params = outcome.steps, outcome.n_params
    result.train_curve = [{"step": step, "loss": loss} for step, loss in outcome.curve]
    if trial.phase == "prune":
        result.heads_kept = trial.n_heads * settings.n_layers
        # Importance on (the first n_eval) training examples, accuracy on the held-out ones.
        train, held_out = datasets(task, settings)
        train = tuple(t[: settings.n_eval].to(device) for t in train)
        with deterministic(settings.seed):
            points = prune_greedily(model, train, tuple(t.to(device) for t in held_out))
        result.pruning = [
            {
                "heads_kept": point.heads_kept,
                "accuracy": point.accuracy,
                "removed_head": None if point.removed is None else "{}.{}".format(*point.removed),
            }
            for point in points
        ]
    result.status = "ok"
