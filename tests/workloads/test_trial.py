"""Trial identity: ids depend on the resolved configuration only, in every process."""

import dataclasses
import hashlib
import subprocess
import sys

import pytest

from analysis.baseline import VENDOR_BACKENDS
from analysis.schema import DESCRIPTIONS
from workloads.backends import BACKENDS
from workloads.trial import DTYPES, Trial, canonical_json

TRIAL = Trial("gqa", "triton", "prefill", 2, 100, 8, 2, 64, "bfloat16", True, '{"x":1}')


def test_trial_id_is_stable_across_processes():
    code = (
        "from workloads.trial import Trial; "
        "print(Trial('gqa','triton','prefill',2,100,8,2,64,'bfloat16',True,'{\"x\":1}').trial_id)"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == TRIAL.trial_id
    assert len(TRIAL.trial_id) == 16


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Trial)])
def test_every_field_changes_the_id(field):
    value = getattr(TRIAL, field)
    if value is None:
        changed = 0
    else:
        changed = (not value) if isinstance(value, bool) else value + (1 if isinstance(value, int) else "x")
    assert dataclasses.replace(TRIAL, **{field: changed}).trial_id != TRIAL.trial_id


def test_benchmark_trials_keep_the_ids_they_had_before_the_trained_phases():
    """The id is the hash of the eleven benchmark fields alone while quality and seed are unset and the
    inputs are randn (the inputs axis came later)."""
    before = {
        "variant": "gqa",
        "backend": "triton",
        "phase": "prefill",
        "batch": 2,
        "seq_len": 100,
        "n_heads": 8,
        "n_kv_heads": 2,
        "head_dim": 64,
        "dtype": "bfloat16",
        "causal": True,
        "params": '{"x":1}',
    }
    assert TRIAL.trial_id == hashlib.sha256(canonical_json(before).encode()).hexdigest()[:16]
    assert TRIAL.trial_id == "31cc5e2288d02845"  # the id this trial had before (code of be070fc)
    assert TRIAL.columns() == {**before, "quality": None, "seed": None, "inputs": "randn"}


def test_prune_rows_have_ids_of_their_own():
    trained = dataclasses.replace(TRIAL, phase="prune", quality='{"task":"mqar"}', seed=0)
    ids = {trained.trial_id, *(trained.row_id(k) for k in range(1, 9))}
    assert len(ids) == 9
    assert trained.row_id(3) == dataclasses.replace(trained).row_id(3)


def test_config_round_trip():
    assert Trial.from_config({**TRIAL.config(), "status": "ok"}) == TRIAL
    assert TRIAL.param_dict == {"x": 1}


def test_the_row_contract_spells_the_backends_and_dtypes_as_workloads_does():
    """analysis may not import workloads, so analysis/schema.py writes these names out: they agree."""
    assert DESCRIPTIONS["backend"] == " | ".join(BACKENDS) + ", or a plugin's"
    assert DESCRIPTIONS["dtype"] == " | ".join(DTYPES)


def test_the_best_baseline_takes_the_backends_pytorch_ships():
    """analysis.baseline names the vendor backends (those `report_baseline=best` chooses among)."""
    assert VENDOR_BACKENDS == tuple(name for name, backend in BACKENDS.items() if backend.vendor)
