"""Trial identity: ids depend on the resolved configuration only, in every process."""

import dataclasses
import subprocess
import sys

import pytest

from workloads.trial import Trial

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
    changed = (not value) if isinstance(value, bool) else value + (1 if isinstance(value, int) else "x")
    assert dataclasses.replace(TRIAL, **{field: changed}).trial_id != TRIAL.trial_id


def test_config_round_trip():
    assert Trial.from_config({**TRIAL.config(), "status": "ok"}) == TRIAL
    assert TRIAL.param_dict == {"x": 1}
