"""The typed config tree (Hydra structured configs), its composition, and its validation.

Every problem a user can cause is raised as `ConfigError` with one line naming the key and the
value at fault, before any work starts (the CLI turns it into exit code 2).
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from workloads.backends import BACKENDS
from workloads.measure import MeasureSettings
from workloads.quality.spec import TRAIN_KEYS, check_settings, quality_json, task_defaults, train_settings
from workloads.quality.tasks import TASKS
from workloads.quality.train import TrainSettings
from workloads.trial import DTYPES, PHASES
from workloads.variants import VARIANTS, param_grid


class ConfigError(ValueError):
    """An invalid configuration; the message is one line that names the key and value at fault."""


@dataclass
class AxesConf:
    batch: list[int] = field(default_factory=lambda: [1])
    seq_len: list[int] = field(default_factory=lambda: [128])
    n_heads: list[int] = field(default_factory=lambda: [8])
    n_kv_heads: list[int] = field(default_factory=lambda: [8])
    head_dim: list[int] = field(default_factory=lambda: [64])
    dtype: list[str] = field(default_factory=lambda: ["float32"])
    causal: list[bool] = field(default_factory=lambda: [True])
    # Heads at a fixed width: when given, head_dim = d_model / n_heads and the head_dim axis is unused.
    d_model: list[int] = field(default_factory=list)


@dataclass
class QualityConf:
    """Phases quality and prune: the synthetic tasks the tiny models learn and how they are trained.
    The sweep's batch axis is the training batch, its seq_len axis the task length."""

    tasks: list[str] = field(default_factory=lambda: ["mqar"])
    # Per-task parameters, every task's defaults included: sweep.quality.task_params.mqar.num_kv_pairs=16
    task_params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {name: task_defaults(name) for name in sorted(TASKS)}
    )
    seeds: list[int] = field(default_factory=lambda: [0])
    # The training settings of `workloads.quality.train.TrainSettings`, with its defaults.
    steps: int = TrainSettings.steps
    lr: float = TrainSettings.lr
    weight_decay: float = TrainSettings.weight_decay
    warmup_steps: int = TrainSettings.warmup_steps
    n_train: int = TrainSettings.n_train
    n_eval: int = TrainSettings.n_eval
    n_layers: int = TrainSettings.n_layers


@dataclass
class SweepConf:
    name: str = MISSING
    description: str = ""
    variants: list[str] = field(default_factory=lambda: ["mha"])
    backends: list[str] = field(default_factory=lambda: ["torch-sdpa"])
    phases: list[str] = field(default_factory=lambda: ["prefill"])
    axes: AxesConf = field(default_factory=AxesConf)
    # Per-variant parameters, every registered variant's defaults included, e.g.
    # sweep.params.mla.latent_dim=256; a list is an axis: sweep.params.moh.top_k=[2,4].
    params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {name: dict(v.param_defaults) for name, v in sorted(VARIANTS.items())}
    )
    quality: QualityConf = field(default_factory=QualityConf)


@dataclass
class RayConf:
    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    # CPU actors when the cluster has no GPU (with GPUs: one actor per GPU). null: every CPU slot
    # (CPUs / cpus_per_worker) of a cluster the sweep joins (`address`), and at most 2 on an instance
    # the sweep starts itself (each worker holds its own torch: a big machine would fill its memory).
    cpu_workers: int | None = None
    cpus_per_worker: int = 1
    # A trial running longer is recorded as `timeout` and its worker replaced (null: no limit).
    trial_timeout_s: float | None = 1800.0
    # Runs of a trial whose worker process died (SIGKILL, a poisoned CUDA context) before it is
    # recorded as `error` ("worker died").
    max_attempts: int = 2


@dataclass
class TrackingConf:
    enabled: bool = True
    uri: str | None = None


@dataclass
class Config:
    sweep: SweepConf = field(default_factory=SweepConf)
    executor: str = "ray"
    results_dir: str = "results"
    reports_dir: str = "reports"
    report: bool = True
    # What the report's speedups are measured against: VARIANT/BACKEND.
    report_baseline: str = "mha/torch-sdpa"
    progress: str = "auto"
    # Skip trials the results store already holds with a terminal status (ok, oom, unsupported).
    resume: bool = True
    # On resume, run trials whose latest row is `error` or `timeout` again.
    retry_failed: bool = True
    # A larger plan is refused (the count is printed); pass max_trials=N to run it.
    max_trials: int = 2000
    ray: RayConf = field(default_factory=RayConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    measure: MeasureSettings = field(default_factory=MeasureSettings)


ConfigStore.instance().store(name="attnsweep_schema", node=Config)

EXECUTORS = ("ray", "local")
PROGRESS_MODES = ("auto", "bar", "lines", "off")
SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def available_sweeps(sweep_dirs: tuple[str, ...] = ()) -> list[str]:
    from importlib.resources import files

    folders = [files("orchestrator.conf") / "sweep", *(Path(d) / "sweep" for d in sweep_dirs)]
    return sorted(
        {
            p.name[:-5]
            for folder in folders
            if folder.is_dir()
            for p in folder.iterdir()
            if p.name.endswith(".yaml")
        }
    )


def _search_path(sweep_dirs: tuple[str, ...]) -> list[str]:
    """`--sweeps DIR`: DIR/sweep/<name>.yaml are sweeps too (Hydra's search path)."""
    for folder in sweep_dirs:
        if not (Path(folder) / "sweep").is_dir():
            raise ConfigError(
                f"--sweeps {folder}: no directory {Path(folder) / 'sweep'} (sweeps go in DIR/sweep/NAME.yaml)"
            )
    if not sweep_dirs:
        return []
    return ["hydra.searchpath=[" + ",".join(f"file://{Path(d).resolve()}" for d in sweep_dirs) + "]"]


def _yaml_cause(exc: BaseException) -> yaml.MarkedYAMLError | None:
    while exc is not None:
        if isinstance(exc, yaml.MarkedYAMLError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _omegaconf_cause(exc: BaseException) -> OmegaConfBaseException | None:
    while exc is not None:
        if isinstance(exc, OmegaConfBaseException):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _one_line(exc: BaseException, overrides: list[str], sweep_dirs: tuple[str, ...] = ()) -> str:
    """Hydra's multi-line errors, reduced to the key and value at fault."""
    wanted = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "sweep"), "?")
    if isinstance(exc, MissingConfigException) and "sweep" in str(exc):
        return f"sweep={wanted}: no such sweep (available: {', '.join(available_sweeps(sweep_dirs))})"
    malformed = _yaml_cause(exc)
    if malformed is not None:
        mark = malformed.problem_mark
        where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        return f"sweep={wanted}: malformed YAML ({where}: {malformed.problem})"
    cause = _omegaconf_cause(exc)
    if cause is not None and getattr(cause, "full_key", None):
        reason = str(cause).splitlines()[0]
        if re.search(r"Key '.*' (is )?not in|Missing key", reason):
            reason = "unknown key"
        return f"{cause.full_key}: {reason}"
    return str(exc).strip().splitlines()[0]


def _check_syntax(overrides: list[str]) -> None:
    """Each override parses; no key is given twice with different values (Hydra would silently keep
    the last); a sweep is a plain name, never a path."""
    parser = OverridesParser.create()
    given: dict[str, str] = {}
    for override in overrides:
        try:
            (parsed,) = parser.parse_overrides([override])
        except OverrideParseException as exc:
            raise ConfigError(f"{override}: cannot parse ({str(exc).splitlines()[0]})") from exc
        key, value = parsed.key_or_group.lstrip("+~"), override.split("=", 1)[-1]
        if key in given and given[key] != value:
            raise ConfigError(f"{key}: given twice, as {given[key]} and as {value} (keep one)")
        given[key] = value
        if key == "sweep" and not SWEEP_NAME.match(value):
            raise ConfigError(f"sweep={value}: not a sweep name (letters, digits, '_', '.', '-'; no paths)")


def _open_params(overrides: list[str]) -> list[str]:
    """`sweep.params.<variant>.<key>=v` (and `sweep.quality.task_params.<task>.<key>=v`) adds or
    replaces: these are open dicts, checked by their variant (task)."""
    open_keys = ("sweep.params.", "sweep.quality.task_params.")
    return [f"++{o}" if o.startswith(open_keys) else o for o in overrides]


def compose_config(overrides: list[str], sweep_dirs: tuple[str, ...] = ()) -> DictConfig:
    """The composed config (defaults + overrides, sweeps also from `sweep_dirs`), typed and in struct mode."""
    overrides = list(overrides)
    _check_syntax(overrides)
    search_path = _search_path(sweep_dirs)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="orchestrator.conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=[*search_path, *_open_params(overrides)])
        # '+key=value' can add keys Hydra lets through; the schema refuses them (and wrong types).
        schema = OmegaConf.structured(Config)
        OmegaConf.set_struct(schema, True)
        OmegaConf.set_struct(schema.sweep.params, False)  # open: each variant checks its own params
        OmegaConf.set_struct(schema.sweep.quality.task_params, False)  # open: each task checks its own
        OmegaConf.merge(schema, OmegaConf.to_container(cfg))
    except (HydraException, OmegaConfBaseException, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(_one_line(exc, overrides, sweep_dirs)) from exc
    return cfg


def _check_choices(key: str, values: list, allowed, what: str) -> None:
    if not values:
        raise ConfigError(f"{key}: empty list (give at least one {what})")
    for value in values:
        if value not in allowed:
            raise ConfigError(f"{key}: unknown {what} {value!r} (known: {', '.join(sorted(allowed))})")


def validate(cfg: DictConfig) -> None:
    from analysis.baseline import Baseline

    try:
        Baseline.parse(cfg.report_baseline)
    except ValueError as exc:
        raise ConfigError(f"report_baseline: {exc}") from exc
    """Everything the planner and the executors rely on; raises ConfigError on the first problem."""
    sweep = cfg.sweep
    if not SWEEP_NAME.match(sweep.name):
        raise ConfigError(f"sweep.name: {sweep.name!r} is not a plain name (letters, digits, '_', '.', '-')")
    _check_choices("sweep.variants", list(sweep.variants), VARIANTS, "variant")
    _check_choices("sweep.backends", list(sweep.backends), BACKENDS, "backend")
    _check_choices("sweep.phases", list(sweep.phases), PHASES, "phase")
    _check_choices("sweep.axes.dtype", list(sweep.axes.dtype), DTYPES, "dtype")
    for axis in ("batch", "seq_len", "n_heads", "n_kv_heads", "head_dim"):
        values = list(sweep.axes[axis])
        if not values:
            raise ConfigError(f"sweep.axes.{axis}: empty list")
        for value in values:
            if value <= 0:
                raise ConfigError(f"sweep.axes.{axis}: {value} is not a positive integer")
    if not list(sweep.axes.causal):
        raise ConfigError("sweep.axes.causal: empty list")
    for value in sweep.axes.d_model:
        if value <= 0:
            raise ConfigError(f"sweep.axes.d_model: {value} is not a positive integer")
    _validate_quality(sweep.quality)
    for variant_name, params in sweep.params.items():
        if variant_name not in VARIANTS:
            raise ConfigError(f"sweep.params.{variant_name}: unknown variant {variant_name!r}")
        try:
            param_grid(variant_name, OmegaConf.to_container(params))
        except ValueError as exc:
            raise ConfigError(f"sweep.params.{variant_name}.{exc}") from exc
    if cfg.executor not in EXECUTORS:
        raise ConfigError(f"executor: {cfg.executor!r} is not one of {', '.join(EXECUTORS)}")
    if cfg.progress not in PROGRESS_MODES:
        raise ConfigError(f"progress: {cfg.progress!r} is not one of {', '.join(PROGRESS_MODES)}")
    for key in ("cpu_workers", "cpus_per_worker", "max_attempts"):
        if cfg.ray[key] is not None and cfg.ray[key] < 1:
            raise ConfigError(f"ray.{key}: {cfg.ray[key]} must be at least 1")
    if cfg.ray.trial_timeout_s is not None and cfg.ray.trial_timeout_s <= 0:
        raise ConfigError(f"ray.trial_timeout_s: {cfg.ray.trial_timeout_s} must be positive (null: no limit)")
    if cfg.max_trials < 1:
        raise ConfigError(f"max_trials: {cfg.max_trials} must be at least 1")
    _validate_results_dir(cfg.results_dir)
    if cfg.executor == "local" and cfg.ray.address:
        raise ConfigError(
            f"ray.address={cfg.ray.address}: executor=local runs without Ray (drop one of the two)"
        )
    for key in ("warmup_ms", "rep_ms", "min_run_time_s"):
        if cfg.measure[key] <= 0:
            raise ConfigError(f"measure.{key}: {cfg.measure[key]} must be positive")


def _validate_results_dir(results_dir: str) -> None:
    """A URI must be one the results store can use; whether it can be written is checked when a run
    starts (orchestrator.sweep.check_writable), so validating contacts no object store."""
    from analysis.store import check_uri, is_uri

    if is_uri(results_dir):
        try:
            check_uri(results_dir)
        except ValueError as exc:
            raise ConfigError(f"results_dir={results_dir}: {str(exc).strip().splitlines()[0]}") from exc


def _validate_quality(quality: DictConfig) -> None:
    _check_choices("sweep.quality.tasks", list(quality.tasks), TASKS, "task")
    if not list(quality.seeds):
        raise ConfigError("sweep.quality.seeds: empty list (give at least one seed)")
    train = {key: quality[key] for key in TRAIN_KEYS}
    try:
        check_settings(train_settings(train, batch_size=1, seed=0))
    except ValueError as exc:
        raise ConfigError(f"sweep.quality.{exc}") from exc
    for task, params in quality.task_params.items():
        if task not in TASKS:
            raise ConfigError(
                f"sweep.quality.task_params.{task}: unknown task (known: {', '.join(sorted(TASKS))})"
            )
        try:
            quality_json(str(task), OmegaConf.to_container(params), train)
        except ValueError as exc:
            raise ConfigError(f"sweep.quality.task_params.{task}.{exc}") from exc


def load_config(overrides: list[str], sweep_dirs: tuple[str, ...] = ()) -> DictConfig:
    cfg = compose_config(overrides, sweep_dirs)
    validate(cfg)
    return cfg
