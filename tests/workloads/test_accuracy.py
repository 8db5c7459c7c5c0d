"""workloads.accuracy.errors: the error every trial and every test reports, on the CPU in float64 and
on a GPU on the device (float32 difference, float64 norms, four numbers copied to the host)."""

import math

import pytest
import torch

from workloads.accuracy import comparison_dtype, error_stats, errors


def test_max_abs_and_relative_error_against_hand_computed_values():
    ref = torch.full((4,), 2.0)  # ||ref|| = 4
    out = ref.clone()
    out[1] += 0.5  # ||out - ref|| = 0.5
    assert errors(out, ref) == pytest.approx((0.5, 0.125), rel=1e-12)


def test_cpu_takes_the_difference_in_float64():
    """1 + 1e-12 in a float64 reference against a float32 output of 1: a float32 difference sees 0."""
    out = torch.ones(8, dtype=torch.float32)
    ref = torch.ones(8, dtype=torch.float64) + 1e-12
    max_abs, rel = errors(out, ref)
    assert max_abs == pytest.approx(1e-12, rel=1e-3) and rel == pytest.approx(1e-12, rel=1e-3)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "minus-inf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_non_finite_output_gives_nan(bad, dtype):
    ref = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    out = ref.to(dtype)
    out[2, 4] = bad
    max_abs, rel = errors(out, ref)
    assert math.isnan(max_abs) and math.isnan(rel)


def test_zero_reference_gives_the_absolute_norm_and_empty_tensors_give_zero():
    out = torch.tensor([3.0, 4.0])
    assert errors(out, torch.zeros(2)) == pytest.approx((4.0, 5.0), rel=1e-12)
    assert errors(torch.empty(0, 4), torch.empty(0, 4)) == (0.0, 0.0)


def test_shapes_must_match():
    with pytest.raises(ValueError, match=r"output shape \(2, 3\) != reference shape \(3, 2\)"):
        errors(torch.zeros(2, 3), torch.zeros(3, 2))


def test_off_the_cpu_the_difference_is_float32_at_least():
    meta = torch.device("meta")
    bf16, fp32 = (torch.empty(2, dtype=t, device=meta) for t in (torch.bfloat16, torch.float32))
    assert comparison_dtype(bf16, fp32) == torch.float32
    assert comparison_dtype(bf16, bf16) == torch.float32
    assert comparison_dtype(bf16, fp32.double()) == torch.float64
    on_cpu = torch.empty(2, dtype=torch.bfloat16)
    assert comparison_dtype(on_cpu, on_cpu.float()) == torch.float64  # the CPU: float64 as before


def test_the_statistics_are_computed_on_the_tensors_device():
    """Meta tensors cannot be copied to the host: a `.cpu()` or `.to("cpu")` of the full tensors
    raises here, so this passes only if everything but the four numbers stays on the device."""
    out = torch.empty(2, 4, 1000, 64, dtype=torch.bfloat16, device="meta")
    ref = torch.empty(2, 4, 1000, 64, dtype=torch.float32, device="meta")
    stats = error_stats(out, ref)
    assert stats.device.type == "meta" and stats.dtype == torch.float64 and stats.shape == (4,)


@pytest.mark.gpu
def test_on_a_gpu_errors_match_the_float64_host_computation():
    generator = torch.Generator(device="cuda").manual_seed(0)
    ref = torch.randn(2, 8, 4096, 128, device="cuda", generator=generator)
    out = (ref + 1e-3 * torch.randn(ref.shape, device="cuda", generator=generator)).to(torch.bfloat16)
    assert error_stats(out, ref).device.type == "cuda"
    on_device, on_host = errors(out, ref), errors(out.cpu(), ref.cpu())
    assert on_device == pytest.approx(on_host, rel=1e-4)
    out[1, 2, 3, 4] = math.nan
    assert all(math.isnan(e) for e in errors(out, ref))
