"""The interface every attention variant implements, and the cost arithmetic they share.

A variant names its inputs once (`input_specs`): activations projected from the layer input x
(q, k, v, router logits, ...) and weights of its own (mixing matrices, experts, ...). From that one
list come the benchmark inputs (`make_inputs`), the trainable layer (`workloads.variants.layer`) and
the parameter count, so the three never disagree.
"""

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from workloads.backends import TRITON_HEAD_DIMS, get_backend
from workloads.inputs import shape_inputs
from workloads.trial import TRAINED_PHASES, Trial

# (backend, phase) -> callable(trial, inputs) -> output
Implementation = Callable[[Trial, dict[str, torch.Tensor]], torch.Tensor]

# docs/architecture.md §4: a backward costs 2.5 forwards in FLOPs; it reads q, k, v, o, dO and writes
# dq, dk, dv, about twice the forward's traffic.
TRAIN_FLOPS_FACTOR = 3.5
TRAIN_BYTES_FACTOR = 3.0


class InvalidPoint(ValueError):
    """A point of the grid that this variant cannot describe (e.g. n_heads % n_kv_heads != 0)."""

    def __init__(self, axis: str, reason: str):
        super().__init__(reason)
        self.axis = axis  # the sweep axis at fault, for the user's error message


@dataclass(frozen=True)
class TokenInput:
    """An activation projected from x [B, N, d_model] by a learned linear map.

    heads_first: [B, features[0], N, features[1]] (q, k, v); else [B, N, *features] (router logits).
    cached: in the decode phase this input is the KV cache `<name>_cache` of every past token;
    otherwise decode gets only the new token's row ([B, f0, f1] or [B, *features]).
    project: False for x itself (features = (d_model,)), which a few variants read directly.
    """

    name: str
    features: tuple[int, ...]
    heads_first: bool = True
    cached: bool = False
    project: bool = True


@dataclass(frozen=True)
class Weight:
    """A learned tensor of the variant's own. init: "normal" (std 1/sqrt(fan-in)), "identity" (eye
    over the last two dims, e.g. knocking-heads' projection), "zeros" or "ones"."""

    name: str
    shape: tuple[int, ...]
    init: str = "normal"


InputSpec = TokenInput | Weight


def initial_weight(
    spec: Weight, generator: torch.Generator | None = None, noise: float = 0.0
) -> torch.Tensor:
    """The weight's initial value in float32 on the CPU, plus `noise`·N(0, 1) (benchmarks perturb
    identities and zeros so the math under test is not trivial). `generator` must be a CPU one."""
    # device= on every factory: the CPU whatever torch's default device is (a caller may have set
    # another with `torch.device(...)` or torch.set_default_device), so a CPU generator always fits.
    cpu = torch.device("cpu")
    if spec.init == "normal":
        fan_in = spec.shape[-2] if len(spec.shape) >= 2 else spec.shape[-1]
        value = torch.randn(spec.shape, generator=generator, device=cpu) / math.sqrt(fan_in)
    elif spec.init == "identity":
        value = torch.eye(spec.shape[-2], spec.shape[-1], device=cpu).expand(spec.shape).clone()
    elif spec.init in ("zeros", "ones"):
        factory = torch.zeros if spec.init == "zeros" else torch.ones
        value = factory(spec.shape, device=cpu)
    else:
        raise ValueError(f"{spec.name}: unknown init {spec.init!r}")
    if noise and spec.init != "normal":
        value = value + noise * torch.randn(spec.shape, generator=generator, device=cpu)
    return value


@dataclass(frozen=True)
class Cost:
    """Analytic cost of one pass of one attention layer (docs/architecture.md §4). kv_cache_bytes: the decode
    cache of the whole (batch, seq_len) point when it is not kv_bytes_per_token · B · N (streaming
    heads keep only a window); kv_bytes_per_token is then that size over B · N."""

    flops: float
    bytes_moved: float
    n_params: int
    kv_bytes_per_token: int
    kv_cache_bytes: int | None = None


def dtype_size(dtype: str) -> int:
    return getattr(torch, dtype).itemsize


def mean_keys_per_query(n_q: int, n_k: int, causal: bool) -> float:
    """Keys each query sees on average; causal masks align bottom-right (query i sees keys
    j <= i + n_k - n_q)."""
    if not causal:
        return float(n_k)
    if n_k >= n_q:
        return n_k - n_q + (n_q + 1) / 2
    return n_k * (n_k + 1) / (2 * n_q)


def attention_flops(batch: int, heads: int, n_q: int, n_k: int, d_qk: int, d_v: int, causal: bool) -> float:
    """2 FLOPs per multiply-add for Q·Kᵀ and for P·V over the keys each query sees."""
    return 2.0 * batch * heads * n_q * mean_keys_per_query(n_q, n_k, causal) * (d_qk + d_v)


def d_model_of(trial: Trial) -> int:
    """The layer width: every variant of one point shares it, so their costs compare."""
    return trial.n_heads * trial.head_dim


class Variant:
    """One attention variant: parameters, constraints, inputs, reference math, backends, cost.

    Subclasses set `name`, `summary`, `param_defaults` and `implementations`, and implement
    `input_specs` and `cost`. `implementations[("torch-ref", "prefill")]` is the reference math and
    the trainable forward; a backend listed in `train_backends` also offers the `train` phase
    (forward + backward through autograd of its prefill implementation). docs/adding-a-variant.md
    is the checklist.
    """

    name: str
    summary: str
    param_defaults: Mapping[str, Any] = {}
    # Values of some parameters small enough for the CPU smoke sweep (variants_smoke, whose tiny shapes
    # are B=2, N=40, H=4, G=2, D=16), e.g. MLA's latent_dim=32; {} when the defaults already fit.
    smoke_params: Mapping[str, Any] = {}
    implementations: Mapping[tuple[str, str], Implementation] = {}
    train_backends: tuple[str, ...] = ("torch-ref", "torch-sdpa", "flex")
    kv_heads: str = "n_heads"  # "n_heads" (MHA-like), "one" (one KV head) or "axis" (the n_kv_heads axis)
    output_projection: bool = True  # False when the variant's own math ends in d_model (SwitchHead)
    # The forward returns per-head outputs [B, H, N, Dv] that the layer's head mask scales (phase prune).
    maskable_heads: bool = True
    # The kernel families (folders of kernels/) its triton implementation launches, per phase (train:
    # its prefill's): what a change reruns on resume (workloads.fingerprint).
    triton_kernels: Mapping[str, tuple[str, ...]] = {
        "prefill": ("flash_attention",),
        "decode": ("decode_attention",),
    }
    # Why FlexAttention cannot express this variant (its `unsupported` reason for backend flex), where
    # the variant has no flex implementation: what a score_mod / mask_mod per (b, h, q, kv) cannot say.
    flex_limit: str = ""

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults merged with `params`; ValueError "key: reason" on the first unknown or invalid key."""
        unknown = sorted(set(params) - set(self.param_defaults))
        if unknown:
            known = ", ".join(sorted(self.param_defaults)) or "none"
            raise ValueError(f"{unknown[0]}: unknown parameter of {self.name} (known: {known})")
        merged = {**self.param_defaults, **params}
        for key, value in params.items():
            default = self.param_defaults[key]
            numeric = isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)
            if type(value) is not type(default) and not numeric:
                raise ValueError(f"{key}: {value!r} is not a {type(default).__name__}")
        self.validate_params(merged)
        return merged

    def validate_params(self, params: dict[str, Any]) -> None:
        """Raise ValueError("key: reason") for a value this variant cannot use at any point."""

    def point_params(self, point: dict[str, Any]) -> dict[str, Any]:
        """The variant's parameters of a point (its "params" JSON), defaults filled in."""
        return {**self.param_defaults, **json.loads(point.get("params", "{}"))}

    def resolve(self, point: dict[str, Any]) -> dict[str, Any]:
        """The point (axes and "params" JSON) with this variant's constraints applied; InvalidPoint
        when it has none."""
        n_heads = point["n_heads"]
        n_kv_heads = {"n_heads": n_heads, "one": 1, "axis": point["n_kv_heads"]}[self.kv_heads]
        if n_kv_heads > n_heads or n_heads % n_kv_heads:
            raise InvalidPoint("n_kv_heads", f"n_heads={n_heads} is not divisible by n_kv_heads={n_kv_heads}")
        # A decoded token sees the whole cache: decode is causal by construction.
        causal = True if point["phase"] == "decode" else point["causal"]
        return {**point, "n_kv_heads": n_kv_heads, "causal": causal}

    def implementation(self, backend: str, phase: str) -> Implementation | None:
        """What `backend` runs for this variant in `phase` (train: the prefill forward), or None: the
        variant's own implementation of the backend's implementation key, else a plugin backend's own."""
        spec = get_backend(backend)
        forward_phase = "prefill" if phase == "train" else phase
        own = self.implementations.get((spec.implementation, forward_phase))
        return own if own is not None else spec.implementations.get((self.name, forward_phase))

    def unsupported(self, backend: str, phase: str) -> str | None:
        """Why (backend, phase) cannot run this variant, or None when it can."""
        if phase in TRAINED_PHASES:
            if backend != "torch-ref":
                return f"phase {phase} trains the reference layer of {self.name} (backend torch-ref only)"
            if ("torch-ref", "prefill") not in self.implementations:
                return f"{self.name} has no trainable reference layer"
            if phase == "prune" and not self.maskable_heads:
                return f"{self.name} mixes its heads before the output, so a head cannot be masked alone"
            return None
        spec = get_backend(backend)
        runs = "" if spec.implementation == backend else f" (which {backend} runs)"
        if self.implementation(backend, phase) is None:
            if spec.implementation == "flex" and self.flex_limit:
                return f"{self.name} on flex: {self.flex_limit}"
            missing = "prefill" if phase == "train" else phase
            return f"{self.name} has no {spec.implementation} implementation{runs} of phase {missing}"
        if phase == "train":
            own = (spec.implementation, "prefill") in self.implementations
            if not (spec.implementation in self.train_backends if own else spec.trains):
                backward = f"{spec.implementation} implementation{runs} with a backward"
                return f"{self.name} has no {backward} (phase train)"
        return None

    def kernel_head_dims(self, trial: Trial) -> tuple[int, int]:
        """(d_qk, d_v) of the attention the kernels run at this point (MLA's differ from head_dim)."""
        return trial.head_dim, trial.head_dim

    def unsupported_shape(self, trial: Trial) -> str | None:
        """Why the trial's backend cannot take this point's shapes (Triton's head-dim limits), or None."""
        if trial.backend != "triton":
            return None
        low, high_qk, high_v = TRITON_HEAD_DIMS[trial.phase]
        d_qk, d_v = self.kernel_head_dims(trial)
        if low <= d_qk <= high_qk and low <= d_v <= high_v:
            return None
        return (
            f"{self.name}: the triton {trial.phase} kernel takes head dims d_qk {low}..{high_qk} and "
            f"d_v {low}..{high_v}, this point needs d_qk={d_qk}, d_v={d_v}"
        )

    def run(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        implementation = self.implementation(trial.backend, trial.phase)
        if implementation is None:
            raise ValueError(self.unsupported(trial.backend, trial.phase))
        return get_backend(trial.backend).call(implementation, trial, inputs)

    def forward(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The reference math of the prefill/train phase: differentiable, any dtype."""
        return self.implementations[("torch-ref", "prefill")](trial, inputs)

    def reference(self, trial: Trial, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Plain PyTorch math of the trial's phase, run on inputs already cast to the reference precision."""
        phase = "prefill" if trial.phase == "train" else trial.phase
        return self.implementations[("torch-ref", phase)](trial, inputs)

    def input_specs(self, trial: Trial) -> list[InputSpec]:
        raise NotImplementedError

    def output_features(self, trial: Trial) -> int:
        """Width of the attention output per token, before the output projection."""
        return trial.n_heads * trial.head_dim

    def make_inputs(
        self, trial: Trial, device: torch.device, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Random activations (a full cache of seq_len tokens in decode) of the trial's input kind
        (`workloads.inputs`) and perturbed initial weights."""
        b, n, dtype = trial.batch, trial.seq_len, getattr(torch, trial.dtype)
        inputs: dict[str, torch.Tensor] = {}
        weights = {spec.name for spec in self.input_specs(trial) if isinstance(spec, Weight)}
        for spec in self.input_specs(trial):
            if isinstance(spec, Weight):
                # Weights start on the CPU (`initial_weight`), from a CPU generator seeded by the trial's
                # generator: the seed is drawn on that generator's own device (a CUDA generator cannot
                # draw a CPU tensor), so the CPU gets the same weights as before and CUDA works.
                seed = torch.randint(2**31, (1,), generator=generator, device=generator.device)
                cpu_generator = torch.Generator(device="cpu").manual_seed(int(seed))
                inputs[spec.name] = initial_weight(spec, cpu_generator, noise=0.1).to(device, dtype)
                continue
            name, shape = spec.name, tuple(spec.features)
            if trial.phase == "decode" and not spec.cached:
                full = (b, *shape)  # the new token only
            else:
                full = (b, shape[0], n, *shape[1:]) if spec.heads_first else (b, n, *shape)
                name = f"{name}_cache" if trial.phase == "decode" else name
            inputs[name] = torch.randn(full, generator=generator, device=device, dtype=dtype)
        activations = [name for name in inputs if name not in weights]
        shape_inputs(trial.inputs, inputs, activations, generator)
        if trial.phase == "decode":
            inputs["cache_seqlens"] = torch.full((b,), n, dtype=torch.int32, device=device)
        return inputs

    def n_params(self, trial: Trial) -> int:
        """Parameters of the trainable layer (`workloads.variants.layer.AttentionLayer`) at this point."""
        d_model = d_model_of(trial)
        total = d_model * self.output_features(trial) if self.output_projection else 0
        for spec in self.input_specs(trial):
            if isinstance(spec, Weight):
                total += math.prod(spec.shape)
            elif spec.project:
                total += d_model * math.prod(spec.features)
        return total

    def cost(self, trial: Trial) -> Cost:
        """Cost of a prefill or decode pass (train is derived in `trial_cost`)."""
        raise NotImplementedError

    def trial_cost(self, trial: Trial) -> Cost:
        if trial.phase in TRAINED_PHASES:  # the attention of the trained model, one forward
            return self.cost(replace(trial, phase="prefill"))
        if trial.phase != "train":
            return self.cost(trial)
        forward = self.cost(replace(trial, phase="prefill"))
        return replace(
            forward,
            flops=forward.flops * TRAIN_FLOPS_FACTOR,
            bytes_moved=forward.bytes_moved * TRAIN_BYTES_FACTOR,
        )
