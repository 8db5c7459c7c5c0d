"""The typed config tree (Hydra structured configs), its composition, and its validation.

Every key is defined once, on a dataclass field here (or on `workloads.measure.MeasureSettings`, the
`measure` section, and `workloads.quality.train.TrainRecipe`, the training settings of
`sweep.quality`): its type, its default and its one-line doc (`metadata["help"]`), which
`attnsweep keys` lists (orchestrator/cli.py) and README's key tables are generated from.
conf/config.yaml holds only Hydra's defaults list. Each section checks its own keys (`check()`);
every problem a user can cause is raised as `ConfigError` with one line naming the key and the value
at fault, before any work starts (the CLI turns it into exit code 2).
"""

import copy
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from analysis.baseline import DEFAULT_BASELINE, Baseline
from orchestrator.messages import first_line
from workloads.backends import BACKENDS
from workloads.inputs import INPUT_KINDS
from workloads.measure import MeasureSettings
from workloads.quality.spec import quality_json, task_defaults
from workloads.quality.tasks import TASKS
from workloads.quality.train import TrainRecipe
from workloads.trial import DTYPES, PHASES
from workloads.variants import ALL_VARIANTS, PLUGIN_ERROR, VARIANTS, param_grid

EXECUTORS = ("ray", "local")
PROGRESS_MODES = ("auto", "bar", "lines", "off")
SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(ValueError):
    """An invalid configuration; the message is one line that names the key and value at fault."""


def setting(default: Any, help: str) -> Any:
    """A config field: its default and its one-line doc (`attnsweep keys`)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _check_choices(key: str, values: list, allowed, what: str) -> None:
    if not values:
        raise ConfigError(f"{key}: empty list (give at least one {what})")
    for value in values:
        if value not in allowed:
            raise ConfigError(f"{key}: unknown {what} {value!r} (known: {', '.join(sorted(allowed))})")


def _check_positive(key: str, values: list[int]) -> None:
    for value in values:
        if value <= 0:
            raise ConfigError(f"{key}: {value} is not a positive integer")


def _check_results_dir(results_dir: str) -> None:
    """A URI must be one the results store can use; whether it can be written is checked when a run
    starts (orchestrator.sweep.check_writable), so validating contacts no object store."""
    # Here, not at the top: analysis.store brings pandas, which `attnsweep keys` and `jobs` do without.
    from analysis.store import check_uri, is_uri

    if is_uri(results_dir):
        try:
            check_uri(results_dir)
        except ValueError as exc:
            raise ConfigError(f"results_dir={results_dir}: {first_line(exc)}") from exc


@dataclass
class AxesConf:
    """The grid's axes: every combination is a point."""

    batch: list[int] = setting([1], "batch sizes (trained phases: the training batch)")
    seq_len: list[int] = setting(
        [128], "sequence lengths (decode: cached tokens; trained phases: task length)"
    )
    n_heads: list[int] = setting([8], "query heads")
    n_kv_heads: list[int] = setting(
        [8], "key/value heads (mha: set to n_heads, mqa: to 1; gqa skips n_heads % n_kv_heads != 0)"
    )
    head_dim: list[int] = setting([64], "head dimensions (unused when d_model is given)")
    dtype: list[str] = setting(["float32"], f"element types: {', '.join(DTYPES)}")
    causal: list[bool] = setting([True], "causal masks (decode is causal by construction)")
    d_model: list[int] = setting(
        [], "widths: when given, head_dim = d_model / n_heads (heads compared at one width)"
    )
    inputs: list[str] = setting(
        ["randn"], f"input kinds, where accuracy falls off (workloads/inputs.py): {', '.join(INPUT_KINDS)}"
    )

    def check(self) -> None:
        _check_choices("sweep.axes.dtype", self.dtype, DTYPES, "dtype")
        _check_choices("sweep.axes.inputs", self.inputs, INPUT_KINDS, "input kind")
        for axis in ("batch", "seq_len", "n_heads", "n_kv_heads", "head_dim"):
            if not getattr(self, axis):
                raise ConfigError(f"sweep.axes.{axis}: empty list")
            _check_positive(f"sweep.axes.{axis}", getattr(self, axis))
        if not self.causal:
            raise ConfigError("sweep.axes.causal: empty list")
        _check_positive("sweep.axes.d_model", self.d_model)


@dataclass
class QualityConf(TrainRecipe):
    """Phases quality and prune: how the tiny models are trained (the fields of TrainRecipe) and on
    which synthetic tasks. The sweep's batch axis is the training batch, its seq_len the task length."""

    tasks: list[str] = setting(["mqar"], "tasks (an axis): " + ", ".join(sorted(TASKS)))
    task_params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {name: task_defaults(name) for name in sorted(TASKS)},
        metadata={
            "help": "a task's parameters, e.g. sweep.quality.task_params.mqar.num_kv_pairs=16 "
            "(seq_len is the sweep axis); every task's defaults are in the composed config",
            "entry": "task",
        },
    )
    seeds: list[int] = setting([0], "replicates (an axis): initialisation, data and order")

    def check(self) -> None:
        _check_choices("sweep.quality.tasks", self.tasks, TASKS, "task")
        if not self.seeds:
            raise ConfigError("sweep.quality.seeds: empty list (give at least one seed)")
        try:
            super().check()
        except ValueError as exc:
            raise ConfigError(f"sweep.quality.{exc}") from exc
        for task, params in self.task_params.items():
            if task not in TASKS:
                raise ConfigError(
                    f"sweep.quality.task_params.{task}: unknown task (known: {', '.join(sorted(TASKS))})"
                )
            try:
                quality_json(str(task), params, self.recipe())
            except ValueError as exc:
                raise ConfigError(f"sweep.quality.task_params.{task}.{exc}") from exc


@dataclass
class SweepConf:
    """One grid: a file orchestrator/conf/sweep/<name>.yaml, whose values replace these defaults."""

    name: str = setting(
        MISSING, "the sweep's name, set by its file: MLflow experiment, results and report folder"
    )
    description: str = setting("", "what the sweep is for, in one line")
    variants: list[str] = setting(
        ["mha"], "attention variants: one file each in workloads/variants/; all: every registered one"
    )
    backends: list[str] = setting(["torch-sdpa"], f"backends: {', '.join(BACKENDS)}")
    phases: list[str] = setting(["prefill"], f"phases: {', '.join(PHASES)}")
    axes: AxesConf = field(default_factory=AxesConf)
    params: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {name: dict(v.param_defaults) for name, v in sorted(VARIANTS.items())},
        metadata={
            "help": "a variant's own parameters, e.g. sweep.params.mla.latent_dim=256 (no `+` needed); "
            "a list is an axis: sweep.params.moh.top_k=[2,4,6]",
            "entry": "variant",
        },
    )
    quality: QualityConf = field(default_factory=QualityConf)

    def check(self) -> None:
        if not SWEEP_NAME.match(self.name):
            raise ConfigError(
                f"sweep.name: {self.name!r} is not a plain name (letters, digits, '_', '.', '-')"
            )
        if PLUGIN_ERROR is not None:  # a plugin module that failed to load, named before anything runs
            raise ConfigError(PLUGIN_ERROR)
        _check_choices("sweep.variants", self.variants, [*VARIANTS, ALL_VARIANTS], "variant")
        _check_choices("sweep.backends", self.backends, BACKENDS, "backend")
        _check_choices("sweep.phases", self.phases, PHASES, "phase")
        self.axes.check()
        self.quality.check()
        for variant_name, params in self.params.items():
            if variant_name not in VARIANTS:
                raise ConfigError(f"sweep.params.{variant_name}: unknown variant {variant_name!r}")
            try:
                param_grid(variant_name, params)
            except ValueError as exc:
                raise ConfigError(f"sweep.params.{variant_name}.{exc}") from exc


@dataclass
class RayConf:
    """Where trials run with executor=ray, and how failing ones end."""

    address: str | None = setting(None, "null starts a local instance; auto or host:port joins a cluster")
    num_cpus: int | None = setting(None, "local instance only: CPUs to declare (null: all of this machine's)")
    num_gpus: int | None = setting(None, "local instance only: GPUs to declare (null: detect)")
    # Each worker holds its own torch: on an instance the sweep starts, a big machine would fill its memory.
    cpu_workers: int | None = setting(
        None,
        "CPU actors when the cluster has no GPU (with GPUs: one per GPU); null: every CPU slot of a "
        "joined cluster (ray.address), at most 2 on a local instance; actors spread over the nodes",
    )
    cpus_per_worker: int = setting(1, "CPUs (and torch threads) per CPU actor")
    trial_timeout_s: float | None = setting(
        1800.0, "a trial running longer is a `timeout` row and its worker is replaced (null: no limit)"
    )
    max_attempts: int = setting(
        2, "runs of a trial whose worker died (SIGKILL, a poisoned CUDA context) before it is an `error` row"
    )

    def check(self) -> None:
        for key in ("cpu_workers", "cpus_per_worker", "max_attempts"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"ray.{key}: {getattr(self, key)} must be at least 1")
        if self.trial_timeout_s is not None and self.trial_timeout_s <= 0:
            raise ConfigError(
                f"ray.trial_timeout_s: {self.trial_timeout_s} must be positive (null: no limit)"
            )


@dataclass
class TrackingConf:
    """MLflow: experiment = sweep, one parent run per invocation, one child run per trial."""

    enabled: bool = setting(True, "log to MLflow (the Parquet dataset is written either way)")
    uri: str | None = setting(
        None, "null: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here; http://host:5000 for a server"
    )


@dataclass
class Config:
    sweep: SweepConf = field(default_factory=SweepConf)
    executor: str = setting("ray", "ray, or local: the same trials in this process, without Ray")
    results_dir: str = setting(
        "results", "the dataset goes under <results_dir>/<sweep.name>/ (or s3://, gs://)"
    )
    reports_dir: str = setting("reports", "the report goes under <reports_dir>/<sweep.name>/")
    report: bool = setting(True, "build the report (index.html, summary.md) when the run ends")
    report_baseline: str = setting(
        DEFAULT_BASELINE,
        "what the report's speedups are measured against: best (at each point the fastest PyTorch "
        "kernel of mha, else of the row's own variant) or VARIANT/BACKEND, e.g. mha/torch-sdpa",
    )
    progress: str = setting(
        "auto", "auto (a live bar on a terminal, one line per trial otherwise), bar, lines or off"
    )
    resume: bool = setting(
        True, "skip trials the store holds as ok, oom or unsupported (false: measure all again, a new run)"
    )
    retry_failed: bool = setting(True, "on resume, run trials whose latest row is error or timeout again")
    max_trials: int = setting(2000, "a larger plan is refused with its size; pass max_trials=N to run it")
    ray: RayConf = field(default_factory=RayConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    measure: MeasureSettings = field(default_factory=MeasureSettings)

    def check(self) -> None:
        """Everything the planner and the executors rely on; ConfigError on the first problem."""
        try:
            baseline = Baseline.parse(self.report_baseline)
        except ValueError as exc:
            raise ConfigError(f"report_baseline: {exc}") from exc
        self.sweep.check()
        if self.report:
            self._check_baseline_is_swept(baseline)
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor: {self.executor!r} is not one of {', '.join(EXECUTORS)}")
        if self.progress not in PROGRESS_MODES:
            raise ConfigError(f"progress: {self.progress!r} is not one of {', '.join(PROGRESS_MODES)}")
        self.ray.check()
        if self.max_trials < 1:
            raise ConfigError(f"max_trials: {self.max_trials} must be at least 1")
        _check_results_dir(self.results_dir)
        if self.executor == "local" and self.ray.address:
            raise ConfigError(
                f"ray.address={self.ray.address}: executor=local runs without Ray (drop one of the two)"
            )
        try:
            self.measure.check()
        except ValueError as exc:
            raise ConfigError(f"measure.{exc}") from exc

    def _check_baseline_is_swept(self, baseline: Baseline) -> None:
        """A fixed baseline names a swept variant and backend: else the report refuses it, after the run."""
        variants = list(VARIANTS) if ALL_VARIANTS in self.sweep.variants else self.sweep.variants
        for key, name, swept in (
            ("variants", baseline.variant, variants),
            ("backends", baseline.backend, self.sweep.backends),
        ):
            if not baseline.is_best and name not in swept:
                raise ConfigError(
                    f"report_baseline={self.report_baseline}: {name} is not in sweep.{key} "
                    f"({', '.join(swept)}); report_baseline=best takes the fastest PyTorch kernel"
                )


ConfigStore.instance().store(name="attnsweep_schema", node=Config)
# Each variant's small parameters (`Variant.smoke_params`), which a sweep file takes as its params'
# starting values with `defaults: [/variant_params@params: smoke, _self_]` (variants_smoke): Hydra
# merges them over the defaults, and the file's own params and the command line over them.
ConfigStore.instance().store(
    group="variant_params",
    name="smoke",
    node={name: dict(variant.smoke_params) for name, variant in VARIANTS.items() if variant.smoke_params},
)


def available_sweeps(sweep_dirs: tuple[str, ...] = ()) -> list[str]:
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


def _cause(exc: BaseException | None, kind: type) -> BaseException | None:
    """The first exception of type `kind` in the chain of `exc` (Hydra wraps what went wrong)."""
    while exc is not None and not isinstance(exc, kind):
        exc = exc.__cause__ or exc.__context__
    return exc


def _one_line(exc: BaseException, overrides: list[str], sweep_dirs: tuple[str, ...] = ()) -> str:
    """Hydra's multi-line errors, reduced to the key and value at fault."""
    wanted = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "sweep"), "?")
    if isinstance(exc, MissingConfigException) and "sweep" in str(exc):
        return f"sweep={wanted}: no such sweep (available: {', '.join(available_sweeps(sweep_dirs))})"
    malformed = _cause(exc, yaml.MarkedYAMLError)
    if malformed is not None:
        mark = malformed.problem_mark
        where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        return f"sweep={wanted}: malformed YAML ({where}: {malformed.problem})"
    cause = _cause(exc, OmegaConfBaseException)
    if cause is not None and getattr(cause, "full_key", None):
        reason = first_line(cause)
        if re.search(r"Key '.*' (is )?not in|Missing key", reason):
            reason = "unknown key"
        return f"{cause.full_key}: {reason}"
    return first_line(exc)


def _check_syntax(overrides: list[str]) -> None:
    """Each override parses; no key is given twice with different values (Hydra would silently keep
    the last); a sweep is a plain name, never a path."""
    parser = OverridesParser.create()
    given: dict[str, str] = {}
    for override in overrides:
        try:
            (parsed,) = parser.parse_overrides([override])
        except OverrideParseException as exc:
            raise ConfigError(f"{override}: cannot parse ({first_line(exc)})") from exc
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


def compose_config(overrides: list[str], sweep_dirs: tuple[str, ...] = ()) -> Config:
    """The composed config (defaults + overrides, sweeps also from `sweep_dirs`) as its typed object,
    not yet checked."""
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
        return OmegaConf.to_object(OmegaConf.merge(schema, OmegaConf.to_container(cfg)))
    except (HydraException, OmegaConfBaseException, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(_one_line(exc, overrides, sweep_dirs)) from exc


def load_config(overrides: list[str], sweep_dirs: tuple[str, ...] = ()) -> Config:
    """The checked, typed config of a command line's overrides; ConfigError on the first problem."""
    cfg = compose_config(overrides, sweep_dirs)
    cfg.check()
    return cfg
