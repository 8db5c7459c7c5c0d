"""Every variant builds its inputs and runs its math on the trial's device, whatever the default device.

On a GPU host the runner passes make_inputs a CUDA generator and a CUDA device while torch's default
device stays the CPU: a tensor factory without `device=` then lands on the wrong device, and a
generator handed to a factory of another device raises ("Expected a 'cpu' device type for generator
but found 'cuda'"). Here is the mirror, without a GPU: the default device is "meta" and the target
the CPU, so a factory that forgets `device=` makes a meta tensor or raises.
"""

import pytest
import torch

from tests.workloads.variants.cases import as_float64
from tests.workloads.variants.test_registry import SHIPPED, smoke_trial
from workloads.accuracy import errors
from workloads.runner import TrainStep
from workloads.variants import get_variant

TARGET = torch.device("cpu")
ELSEWHERE = "meta"  # the default device while the trial runs: anything but TARGET


def offered() -> list:
    """(variant, backend, phase) of every implementation, phase train included, but Triton's backward:
    in the CPU interpreter it takes seconds a case, and its inputs are the forward's."""
    return [
        pytest.param(name, backend, phase, id=f"{name}-{backend}-{phase}")
        for name in SHIPPED
        for backend in ("torch-ref", "torch-sdpa", "triton")
        for phase in ("prefill", "decode", "train")
        if get_variant(name).unsupported(backend, phase) is None and (backend, phase) != ("triton", "train")
    ]


def assert_on_target(tensors: dict[str, torch.Tensor]) -> None:
    misplaced = {name: str(t.device) for name, t in tensors.items() if t.device != TARGET}
    assert not misplaced, f"not on {TARGET}: {misplaced}"


@pytest.mark.parametrize("name,backend,phase", offered())
def test_inputs_outputs_and_reference_are_on_the_target_device(name, backend, phase):
    variant = get_variant(name)
    trial = smoke_trial(name, backend=backend, phase=phase, seq_len=11)
    generator = torch.Generator(device=TARGET).manual_seed(0)
    with torch.device(ELSEWHERE):
        inputs = variant.make_inputs(trial, TARGET, generator)
        assert_on_target(inputs)
        if phase == "train":
            step = TrainStep(variant, trial, inputs, generator)
            outputs = dict(zip(step.names, step(), strict=True))
        else:
            outputs = {"output": variant.run(trial, inputs)}
        reference = variant.reference(trial, as_float64(inputs))
        _, rel_err = errors(outputs["output"], reference)  # the runner's accuracy check, on the device
    assert_on_target(outputs)
    assert_on_target({"reference": reference})
    assert rel_err < 1e-5, f"{trial.label}: rel_err {rel_err:.3e}"
