"""From a sweep config to the list of trials: product of the axes, each variant's constraints applied."""

import itertools
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from orchestrator.config import AxesConf, ConfigError, QualityConf, SweepConf
from workloads.quality.spec import quality_json, trial_settings, trial_task
from workloads.trial import TRAINED_PHASES, Trial
from workloads.variants import InvalidPoint, get_variant, param_grid, variant_names

AXES = ("batch", "seq_len", "n_heads", "n_kv_heads", "head_dim", "dtype", "causal", "inputs")
# The key a user changes when an InvalidPoint names this axis.
_SWEEP_KEYS = {"backend": "sweep.backends", "quality": "sweep.quality.task_params"}


@dataclass
class Plan:
    trials: list[Trial]
    # reason -> how many grid points it removed, e.g. "gqa: n_heads=6 is not divisible by n_kv_heads=4"
    skipped: Counter = field(default_factory=Counter)

    def describe(self) -> str:
        lines = [f"{len(self.trials)} trials"]
        lines += [f"  skipped {count} point(s): {reason}" for reason, count in sorted(self.skipped.items())]
        return "\n".join(lines)


def _shape_points(axes: AxesConf) -> list[dict[str, Any]]:
    """Every combination of the axes. With a d_model axis, head_dim is d_model / n_heads instead of
    the head_dim axis: heads compared at one width."""
    values = {axis: list(getattr(axes, axis)) for axis in AXES}
    widths = list(axes.d_model)
    if widths:
        values["head_dim"] = widths  # read as d_model below
    points = []
    for combination in itertools.product(*values.values()):
        point = dict(zip(AXES, combination, strict=True))
        if widths:
            point["d_model"] = point.pop("head_dim")
        points.append(point)
    return points


def _apply_width(point: dict[str, Any]) -> dict[str, Any]:
    if "d_model" not in point:
        return point
    d_model, n_heads = point.pop("d_model"), point["n_heads"]
    if d_model % n_heads:
        raise InvalidPoint("d_model", f"d_model={d_model} is not divisible by n_heads={n_heads}")
    return {**point, "head_dim": d_model // n_heads}


def _trained_settings(quality: QualityConf, phase: str) -> list[tuple[str, int | None]]:
    """(quality JSON, seed) of each model a trained phase trains; one empty setting otherwise."""
    if phase not in TRAINED_PHASES:
        return [("", None)]
    settings = []
    for task in quality.tasks:
        params = quality.task_params.get(task, {})
        settings += [(quality_json(task, params, quality.recipe()), int(seed)) for seed in quality.seeds]
    return settings


def _check_trained(trial: Trial) -> None:
    """A trained phase trains the float32 reference layer of a causal LM on a task of seq_len tokens."""
    if trial.phase not in TRAINED_PHASES:
        return
    if trial.inputs != "randn":
        raise InvalidPoint(
            "inputs", f"phase {trial.phase} learns a task: input kinds are for benchmark phases"
        )
    if trial.backend != "torch-ref":
        raise InvalidPoint("backend", f"phase {trial.phase} trains the reference layer (backend torch-ref)")
    if trial.dtype != "float32":
        raise InvalidPoint("dtype", f"phase {trial.phase} trains in float32")
    if not trial.causal:
        raise InvalidPoint("causal", f"phase {trial.phase} trains a causal language model")
    task = json.loads(trial.quality)["task"]
    try:
        trial_task(trial)
        trial_settings(trial).check()
    except ValueError as exc:
        key = str(exc).split(":", 1)[0]
        axis = key if key in ("batch", "seq_len") else "quality"
        where = f"task {task} at seq_len={trial.seq_len}, batch={trial.batch}"
        raise InvalidPoint(axis, f"{where}: {exc}") from exc


def plan_to_run(sweep: SweepConf, max_trials: int) -> Plan:
    """The plan of a sweep that is about to run (here or as a submitted job): a plan above
    `max_trials` is a ConfigError that prints its size and the override that runs it."""
    plan = plan_trials(sweep)
    if len(plan.trials) > max_trials:
        raise ConfigError(
            f"max_trials={max_trials}: the plan has {len(plan.trials)} trials; "
            f"pass max_trials={len(plan.trials)} to run them all (`attnsweep plan` lists them)"
        )
    return plan


def plan_trials(sweep: SweepConf) -> Plan:
    """Trials of the sweep in grid order, without duplicates (an axis a variant ignores, such as
    n_kv_heads for mha, collapses to one trial). A variant left with no valid point is a ConfigError."""
    shapes = _shape_points(sweep.axes)
    trained = {phase: _trained_settings(sweep.quality, phase) for phase in sweep.phases}
    plan = Plan(trials=[])
    seen: set[str] = set()
    for variant_name in variant_names(sweep.variants):  # `all`: every registered variant
        variant = get_variant(variant_name)
        given = sweep.params.get(variant_name, {})
        planned, invalid_axis = 0, "n_heads"
        for params, phase, backend in itertools.product(
            param_grid(variant_name, given), sweep.phases, sweep.backends
        ):
            for shape, (quality, seed) in itertools.product(shapes, trained[phase]):
                point = {"variant": variant_name, "backend": backend, "phase": phase, **shape}
                point["params"] = params
                try:
                    trial = Trial(**variant.resolve(_apply_width(point)), quality=quality, seed=seed)
                    _check_trained(trial)
                except InvalidPoint as exc:
                    plan.skipped[f"{variant_name}: {exc}"] += 1
                    invalid_axis = exc.axis
                    continue
                planned += 1
                if trial.trial_id not in seen:
                    seen.add(trial.trial_id)
                    plan.trials.append(trial)
        if planned == 0:
            reasons = "; ".join(
                r.split(": ", 1)[1] for r in plan.skipped if r.startswith(f"{variant_name}: ")
            )
            key = _SWEEP_KEYS.get(invalid_axis, f"sweep.axes.{invalid_axis}")
            raise ConfigError(f"{key}: no valid point for variant {variant_name} ({reasons})")
    return plan
