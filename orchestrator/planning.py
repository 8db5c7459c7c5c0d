"""From a sweep config to the list of trials: product of the axes, each variant's constraints applied."""

import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orchestrator.config import ConfigError
from workloads.trial import Trial
from workloads.variants import InvalidPoint, get_variant, param_grid

AXES = ("batch", "seq_len", "n_heads", "n_kv_heads", "head_dim", "dtype", "causal")


@dataclass
class Plan:
    trials: list[Trial]
    # reason -> how many grid points it removed, e.g. "gqa: n_heads=6 is not divisible by n_kv_heads=4"
    skipped: Counter = field(default_factory=Counter)

    def describe(self) -> str:
        lines = [f"{len(self.trials)} trials"]
        lines += [f"  skipped {count} point(s): {reason}" for reason, count in sorted(self.skipped.items())]
        return "\n".join(lines)


def plan_trials(sweep: DictConfig | dict[str, Any]) -> Plan:
    """Trials of the sweep in grid order, without duplicates (an axis a variant ignores, such as
    n_kv_heads for mha, collapses to one trial). A variant left with no valid point is a ConfigError."""
    sweep = OmegaConf.create(sweep) if isinstance(sweep, dict) else sweep
    axes = {axis: list(sweep.axes[axis]) for axis in AXES}
    plan = Plan(trials=[])
    seen: set[str] = set()
    for variant_name in sweep.variants:
        variant = get_variant(variant_name)
        given = OmegaConf.to_container(sweep.params[variant_name]) if variant_name in sweep.params else {}
        planned, invalid_axis = 0, "n_heads"
        for params, phase, backend, values in itertools.product(
            param_grid(variant_name, given), sweep.phases, sweep.backends, itertools.product(*axes.values())
        ):
            point = {
                "variant": variant_name,
                "backend": backend,
                "phase": phase,
                **dict(zip(AXES, values, strict=True)),
                "params": params,
            }
            try:
                point = variant.resolve(point)
            except InvalidPoint as exc:
                plan.skipped[f"{variant_name}: {exc}"] += 1
                invalid_axis = exc.axis
                continue
            trial = Trial(**point)
            planned += 1
            if trial.trial_id not in seen:
                seen.add(trial.trial_id)
                plan.trials.append(trial)
        if planned == 0:
            reasons = "; ".join(
                r.split(": ", 1)[1] for r in plan.skipped if r.startswith(f"{variant_name}: ")
            )
            raise ConfigError(
                f"sweep.axes.{invalid_axis}: no valid point for variant {variant_name} ({reasons})"
            )
    return plan
