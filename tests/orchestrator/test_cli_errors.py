"""Invalid sweeps exit 2 with one line naming the key and value at fault, and write nothing."""

import socket
import subprocess
import sys

import pytest

from orchestrator.cli import main

INVALID = [
    pytest.param(
        ["sweep.variants=[gqa]", "sweep.axes.n_heads=[6]", "sweep.axes.n_kv_heads=[4]"],
        "sweep.axes.n_kv_heads: no valid point for variant gqa (n_heads=6 is not divisible by n_kv_heads=4)",
        id="gqa-indivisible-heads",
    ),
    pytest.param(
        ["sweep=nope"],
        "sweep=nope: no such sweep (available: backends_smoke, gpu_table, gqa_heads, head_pruning, kv_cache, "
        "moba_long, "
        "moh_heads, quality_heads, quality_smoke, smoke, ",
        id="unknown-sweep",
    ),
    pytest.param(
        ["sweep.variants=[mha,mla2]"], "sweep.variants: unknown variant 'mla2'", id="unknown-variant"
    ),
    pytest.param(
        ["sweep.axes.seq_len=[128,0]"], "sweep.axes.seq_len: 0 is not a positive integer", id="seq-len-zero"
    ),
    pytest.param(
        ["sweep.axes.seq_len=[-5]"], "sweep.axes.seq_len: -5 is not a positive integer", id="seq-len-negative"
    ),
    pytest.param(
        ["sweep.axes.dtype=[bfloat61]"], "sweep.axes.dtype: unknown dtype 'bfloat61'", id="dtype-typo"
    ),
    pytest.param(["sweep.axes.seqlen=[128]"], "sweep.axes.seqlen: unknown key", id="unknown-axis"),
    pytest.param(["foo=1"], "foo: unknown key", id="unknown-key"),
    pytest.param(["+tracking.token=abc"], "tracking.token: unknown key", id="added-unknown-key"),
    pytest.param(["sweep.axes.seq_len=[abc]"], "sweep.axes.seq_len[0]: Value 'abc'", id="wrong-type"),
    pytest.param(["sweep.axes.seq_len=[512,"], "sweep.axes.seq_len=[512,: cannot parse", id="parse-error"),
    pytest.param(
        ["sweep.params.gqa.window=4"],
        "sweep.params.gqa.window: unknown parameter of gqa",
        id="unknown-variant-param",
    ),
    pytest.param(
        ["sweep.params.mla.latent_dim=0"],
        "sweep.params.mla.latent_dim: 0 must be at least 1",
        id="bad-param-value",
    ),
    pytest.param(
        ["sweep.params.moba.top_k=[2,abc]"],
        "sweep.params.moba.top_k: 'abc' is not a int",
        id="bad-param-type",
    ),
    pytest.param(["sweep.backends=[cudnn]"], "sweep.backends: unknown backend 'cudnn'", id="unknown-backend"),
    pytest.param(["sweep.phases=[backward]"], "sweep.phases: unknown phase 'backward'", id="unknown-phase"),
    pytest.param(
        ["sweep.name=../escape"], "sweep.name: '../escape' is not a plain name", id="path-like-name"
    ),
    pytest.param(["executor=slurm"], "executor: 'slurm' is not one of ray, local", id="unknown-executor"),
    pytest.param(
        ["sweep.axes.inputs=[randn,zeros]"],
        "sweep.axes.inputs: unknown input kind 'zeros'",
        id="unknown-inputs",
    ),
    pytest.param(
        ["sweep.quality.tasks=[mqar,recall]"], "sweep.quality.tasks: unknown task 'recall'", id="unknown-task"
    ),
    pytest.param(
        ["sweep.quality.task_params.mqar.pairs=4"],
        "sweep.quality.task_params.mqar.pairs: unknown parameter of task 'mqar'",
        id="unknown-task-param",
    ),
    pytest.param(
        ["sweep.quality.task_params.mqar.num_kv_pairs=1.5"],
        "sweep.quality.task_params.mqar.num_kv_pairs: must be int, got float 1.5",
        id="task-param-type",
    ),
    pytest.param(
        ["sweep.quality.task_params.induction.seq_len=32"],
        "sweep.quality.task_params.induction.seq_len: the task length is the sweep's seq_len axis",
        id="task-length-in-params",
    ),
    pytest.param(
        ["sweep.quality.steps=0"], "sweep.quality.steps: must be at least 1, got 0", id="zero-steps"
    ),
    pytest.param(["sweep.quality.lr=-0.1"], "sweep.quality.lr: must be positive, got -0.1", id="negative-lr"),
    pytest.param(["sweep.quality.seeds=[]"], "sweep.quality.seeds: empty list", id="no-seeds"),
    pytest.param(
        ["sweep.quality.optimizer=sgd"], "sweep.quality.optimizer: unknown key", id="unknown-quality-key"
    ),
    pytest.param(
        ["sweep.phases=[quality]", "sweep.backends=[torch-sdpa]"],
        "sweep.backends: no valid point for variant mha (phase quality trains the reference layer",
        id="quality-without-torch-ref",
    ),
    pytest.param(
        ["sweep.phases=[quality]", "sweep.backends=[torch-ref]", "sweep.axes.seq_len=[63]"],
        "sweep.axes.seq_len: no valid point for variant mha (task mqar at seq_len=63, batch=1: seq_len: must",
        id="task-length-invalid",
    ),
    pytest.param(
        [
            "sweep.phases=[quality]",
            "sweep.backends=[torch-ref]",
            "sweep.quality.task_params.mqar.vocab_size=16",
        ],
        "sweep.quality.task_params: no valid point for variant mha (task mqar at seq_len=64, batch=1: vocab",
        id="task-vocab-too-small",
    ),
    pytest.param(
        ["sweep.quality.task_params.copy.n_tokens=4"],
        "sweep.quality.task_params.copy: unknown task (known: induction, mqar, selective_copy)",
        id="task-params-of-unknown-task",
    ),
    pytest.param(
        ["max_trials=5"], "max_trials=5: the plan has 36 trials; pass max_trials=36", id="grid-too-large"
    ),
    pytest.param(
        ["sweep.axes.seq_len=[64]", "sweep.axes.seq_len=[128]"],
        "sweep.axes.seq_len: given twice, as [64] and as [128]",
        id="conflicting-overrides",
    ),
    pytest.param(
        ["executor=local", "ray.address=127.0.0.1:6379"],
        "ray.address=127.0.0.1:6379: executor=local runs without Ray",
        id="local-executor-with-ray-address",
    ),
    pytest.param(["sweep=../smoke"], "sweep=../smoke: not a sweep name", id="path-like-sweep"),
    pytest.param(["ray.trial_timeout_s=0"], "ray.trial_timeout_s: 0.0 must be positive", id="zero-timeout"),
    pytest.param(["ray.max_attempts=0"], "ray.max_attempts: 0 must be at least 1", id="no-attempts"),
    pytest.param(
        ["report_baseline=mha"], "report_baseline: baseline must be VARIANT/BACKEND", id="report-baseline"
    ),
    pytest.param(
        ["report_baseline=mha/sdpa-cudnn"],
        "report_baseline=mha/sdpa-cudnn: sdpa-cudnn is not in sweep.backends (torch-ref, torch-sdpa, triton)",
        id="report-baseline-not-swept",
    ),
    pytest.param(
        ["sweep.axes.d_model=[64]", "sweep.axes.n_heads=[3]"],
        "sweep.axes.d_model: no valid point for variant mha (d_model=64 is not divisible by n_heads=3)",
        id="width-not-divisible",
    ),
]


@pytest.mark.parametrize("overrides,message", INVALID)
def test_invalid_sweep_exits_2_and_writes_nothing(overrides, message, in_tmp, capsys):
    assert main(["run", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, f"expected one line, got: {err!r}"
    assert err.startswith(f"attnsweep: error: {message}")
    assert list(in_tmp.iterdir()) == []


def test_console_script_exit_code(in_tmp):
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "sweep.axes.dtype=[fp32]"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "attnsweep: error: sweep.axes.dtype: unknown dtype 'fp32' (known: bfloat16, float16, float32)"
    ]
    assert list(in_tmp.iterdir()) == []


def test_invalid_config_fails_before_any_service_starts(in_tmp):
    """Validation comes first: neither Ray nor MLflow (nor Triton) is even imported."""
    code = (
        "import sys; from orchestrator.cli import main; "
        "assert main(['run', 'sweep.axes.seq_len=[0]']) == 2; "
        "print(sorted(m for m in ('ray', 'mlflow', 'triton') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_report_of_missing_dataset_exits_2(in_tmp, capsys):
    assert main(["report", "results/none"]) == 2
    assert "RESULTS=results/none: no results dataset there" in capsys.readouterr().err


def test_unreachable_ray_exits_1_and_writes_nothing(in_tmp, capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["run", f"ray.address=127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith(f"attnsweep: error: ray.address=127.0.0.1:{port}: nothing answers")
        and err.count("\n") == 1
    )
    assert list(in_tmp.iterdir()) == []


def test_results_dir_that_cannot_be_written_exits_2_and_leaves_it_alone(in_tmp, capsys):
    blocker = in_tmp / "occupied"
    blocker.write_text("a file where the results directory should go")
    assert main(["run", f"results_dir={blocker}/results"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnsweep: error: results_dir={blocker}/results: cannot write results there")
    assert err.count("\n") == 1
    assert sorted(p.name for p in in_tmp.iterdir()) == ["occupied"] and blocker.read_text().startswith(
        "a file"
    )


def test_sweeps_of_ones_own_are_found_and_malformed_yaml_exits_2(tmp_path, in_tmp, capsys):
    folder = tmp_path / "mine" / "sweep"
    folder.mkdir(parents=True)
    (folder / "tiny.yaml").write_text("name: tiny\nvariants: [mqa]\naxes:\n  seq_len: [32]\n")
    (folder / "broken.yaml").write_text("name: broken\nvariants: [mha\naxes: {\n")
    assert main(["plan", "--sweeps", str(tmp_path / "mine"), "sweep=tiny"]) == 0
    assert "sweep tiny: 1 trials\n  " in capsys.readouterr().out  # the sweep default backends and phases
    assert main(["run", "--sweeps", str(tmp_path / "mine"), "sweep=broken"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"attnsweep: error: sweep=broken: malformed YAML ({folder / 'broken.yaml'}, line 3")
    assert err.count("\n") == 1
    assert main(["run", "--sweeps", str(tmp_path / "nowhere"), "sweep=tiny"]) == 2
    assert "--sweeps" in capsys.readouterr().err and sorted(p.name for p in in_tmp.iterdir()) == ["mine"]
