"""Train a `TinyLM` on a synthetic task and score it on held-out examples, deterministically.

AdamW with linear warm-up then cosine decay, a fixed training set visited in seeded order, accuracy
on the labelled positions only (targets != IGNORE). The same (trial, task, settings) gives the same
accuracy: seeds are set for initialisation and data, and torch runs its deterministic algorithms.
"""

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from workloads.quality.model import TinyLM
from workloads.quality.tasks import IGNORE, Task
from workloads.trial import Trial


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    n_train: int = 10_000
    n_eval: int = 1_000
    n_layers: int = 2
    seed: int = 0
    log_every: int = 25  # training-curve resolution (steps)


@dataclass
class TrainOutcome:
    accuracy: float  # held-out, labelled positions only
    loss: float  # mean training loss over the last `log_every` steps
    n_params: int
    steps: int
    curve: list[tuple[int, float]] = field(
        default_factory=list
    )  # (step, mean training loss since last point)


def learning_rate(step: int, settings: TrainSettings) -> float:
    """Linear warm-up to `lr`, then cosine decay to 0 at `steps`."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def masked_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


@torch.no_grad()
def accuracy(model: TinyLM, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 256) -> float:
    """Share of labelled positions where the argmax prediction is the target."""
    correct = total = 0
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start : start + batch_size])
        labels = targets[start : start + batch_size]
        scored = labels != IGNORE
        correct += int((logits.argmax(-1)[scored] == labels[scored]).sum())
        total += int(scored.sum())
    return correct / max(total, 1)


def train_and_evaluate(
    model: TinyLM, task: Task, settings: TrainSettings, device: torch.device | str = "cpu"
) -> TrainOutcome:
    """Train on the training set of `datasets`, evaluate on its held-out set."""
    (train_inputs, train_targets), (eval_inputs, eval_targets) = (
        tuple(t.to(device) for t in pair) for pair in datasets(task, settings)
    )
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    order = torch.Generator().manual_seed(settings.seed)
    curve: list[tuple[int, float]] = []
    window: list[float] = []
    permutation = torch.randperm(settings.n_train, generator=order)
    cursor = 0
    for step in range(settings.steps):
        if cursor + settings.batch_size > settings.n_train:
            permutation, cursor = torch.randperm(settings.n_train, generator=order), 0
        batch = permutation[cursor : cursor + settings.batch_size].to(device)
        cursor += settings.batch_size
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, settings)
        loss = masked_loss(model(train_inputs[batch]), train_targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(loss.item())
        if (step + 1) % settings.log_every == 0 or step + 1 == settings.steps:
            curve.append((step + 1, sum(window) / len(window)))
            window = []
    model.eval()
    return TrainOutcome(
        accuracy=accuracy(model, eval_inputs, eval_targets),
        loss=curve[-1][1] if curve else float("nan"),
        n_params=sum(p.numel() for p in model.parameters()),
        steps=settings.steps,
        curve=curve,
    )


def datasets(task: Task, settings: TrainSettings) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """(training set, held-out set): task.generate(n_train, seed) and task.generate(n_eval, seed + 1)."""
    return task.generate(settings.n_train, settings.seed), task.generate(settings.n_eval, settings.seed + 1)


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded RNG and torch's deterministic algorithms inside the block; the RNG state and the previous
    mode are restored after it."""
    # cuBLAS is deterministic only with a fixed workspace (read when CUDA first creates its handle).
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    # warn_only: an op without a deterministic CUDA kernel (some scatter/index ops of the routed
    # variants) warns instead of failing the trial; on the CPU every op used here is deterministic.
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def train_variant(
    trial: Trial, task: Task, settings: TrainSettings, device: torch.device | str = "cpu"
) -> tuple[TinyLM, TrainOutcome]:
    """A fresh TinyLM with `trial`'s attention, initialised from settings.seed, trained and scored."""
    with deterministic(settings.seed):
        model = TinyLM(trial, task.vocab_size, task.seq_len, n_layers=settings.n_layers)
        return model, train_and_evaluate(model, task, settings, device)
