"""Train a `TinyLM` on a synthetic task and score it on held-out examples, deterministically.

AdamW with linear warm-up then cosine decay, a fixed training set visited in seeded order, accuracy
on the labelled positions only (targets != IGNORE). The same (trial, task, settings) gives the same
accuracy: seeds are set for initialisation and data, and torch runs its deterministic algorithms.
"""

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from workloads.quality.model import TinyLM
from workloads.quality.tasks import IGNORE, Task
from workloads.trial import Trial


@dataclass
class TrainRecipe:
    """How a model is trained: what a sweep chooses (`sweep.quality.<key>`, whose defaults and docs
    these fields are) and a trial's quality JSON records as "train". The trial gives batch and seed."""

    steps: int = field(
        default=1000, metadata={"help": "training steps: AdamW, linear warm-up, then cosine decay to 0"}
    )
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (reached after the warm-up)"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    warmup_steps: int = field(default=50, metadata={"help": "steps of linear warm-up"})
    n_train: int = field(default=10_000, metadata={"help": "training examples (visited in seeded order)"})
    n_eval: int = field(default=1_000, metadata={"help": "held-out examples the accuracy is measured on"})
    n_layers: int = field(default=2, metadata={"help": "blocks of the tiny language model"})

    def check(self) -> None:
        """ValueError "key: reason" for settings no training can run with."""
        _check_at_least_one(self, ("steps", "n_train", "n_eval", "n_layers"))
        if self.lr <= 0:
            raise ValueError(f"lr: must be positive, got {self.lr}")
        for key in ("weight_decay", "warmup_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must not be negative, got {getattr(self, key)}")

    def recipe(self) -> dict[str, Any]:
        """The recipe's own settings, a subclass's left out: a quality JSON's "train" part."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainRecipe)}


@dataclass
class TrainSettings(TrainRecipe):
    """A recipe with what the trial gives: everything one training run needs."""

    batch_size: int = field(default=64, metadata={"help": "examples per step (the trial's batch)"})
    seed: int = field(default=0, metadata={"help": "initialisation, data and order (the trial's seed)"})
    log_every: int = field(default=25, metadata={"help": "training-curve resolution (steps)"})

    def check(self) -> None:
        _check_at_least_one(self, ("steps", "batch_size", "n_train", "n_eval", "n_layers"))
        super().check()
        if self.batch_size > self.n_train:
            raise ValueError(f"batch: {self.batch_size} exceeds n_train={self.n_train}")


def _check_at_least_one(settings: TrainRecipe, keys: tuple[str, ...]) -> None:
    for key in keys:
        if getattr(settings, key) < 1:
            raise ValueError(f"{key}: must be at least 1, got {getattr(settings, key)}")


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
