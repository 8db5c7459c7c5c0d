"""Synthetic recall tasks that the quality phase trains tiny models on.

Each task is a frozen dataclass whose fields are its explicit parameters; `generate(n, seed)` returns
(inputs, targets), both int64 [n, seq_len], with next-token labels: targets[i, t] is what the model must
predict after reading inputs[i, :t+1], IGNORE where a position is not scored. All randomness comes from
a local torch.Generator seeded with `seed`, so the same (parameters, seed) gives bit-identical tensors
and the global RNG state is neither read nor changed.
"""

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import ClassVar

import torch

IGNORE = -100  # label of positions that are not scored (F.cross_entropy's default ignore_index)

# Sampling without replacement scores every candidate of every row at once; rows go in chunks so a
# large vocabulary (8k keys x 10k examples) never holds more than this many float64 scores.
_MAX_SCORES_PER_CHUNK = 1 << 21


def _sample_distinct(
    n_rows: int, population: int, k: int, gen: torch.Generator, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """[n_rows, k] int64 indices into range(population), distinct within each row.

    Uniform, or with `weights` [population] (> 0) the successive-sampling law of
    numpy.random.choice(p=weights, replace=False), via Efraimidis-Spirakis: the k largest log(u) / w.
    """
    log_w = None if weights is None else weights.to(torch.float64).log()
    rows_per_chunk = max(1, _MAX_SCORES_PER_CHUNK // population)
    chunks = []
    for start in range(0, n_rows, rows_per_chunk):
        rows = min(rows_per_chunk, n_rows - start)
        scores = torch.rand(rows, population, generator=gen, dtype=torch.float64)  # [rows, population]
        if log_w is not None:
            # log w - log(-log u) = -log(-log(u) / w) ranks like the key log(u) / w but without
            # underflow for tiny weights; the clamp keeps u == 0 finite.
            scores = log_w - torch.log(-torch.log(scores.clamp_min(1e-300)))
        chunks.append(scores.topk(k, dim=1).indices)
    return torch.cat(chunks) if chunks else torch.empty(0, k, dtype=torch.int64)


@dataclass(frozen=True)
class Task:
    """A generator with explicit parameters (the dataclass fields) and a seed per call."""

    name: ClassVar[str]
    # Smallest vocabulary / sequence the task's layout fits in; subclasses tighten these.
    min_vocab_size: ClassVar[int] = 2
    min_seq_len: ClassVar[int] = 2

    vocab_size: int
    seq_len: int

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        if self.vocab_size < self.min_vocab_size:
            raise ValueError(
                f"vocab_size: must be >= {self.min_vocab_size} for {self.name}, got {self.vocab_size}"
            )
        if self.seq_len < self.min_seq_len:
            raise ValueError(f"seq_len: must be >= {self.min_seq_len} for {self.name}, got {self.seq_len}")
        self._check()

    def _check(self) -> None:
        """Task-specific constraints; raise ValueError('key: reason')."""

    def generate(self, n_examples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs int64 [n, seq_len], targets int64 [n, seq_len]: targets[i, t] is the token the model must
        predict AFTER reading inputs[i, :t+1] (next-token labels), IGNORE where not scored."""
        if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 0:
            raise ValueError(f"n_examples: must be an int >= 0, got {n_examples!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed: must be an int, got {seed!r}")
        gen = torch.Generator(device="cpu").manual_seed(seed)
        inputs, targets = self._generate(n_examples, gen)
        return inputs.contiguous(), targets.contiguous()

    def _generate(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def params(self) -> dict[str, typing.Any]:
        """The explicit parameters, as make_task(self.name, **self.params()) takes them back."""
        return dataclasses.asdict(self)


def _check_type(key: str, value: object, expected: type) -> None:
    # Configs (Hydra, YAML) give ints where floats are meant; never the other way, and never bools.
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        bool: isinstance(value, bool),
    }[expected]
    if not ok:
        raise ValueError(f"{key}: must be {expected.__name__}, got {type(value).__name__} {value!r}")
    if expected is float and not math.isfinite(value):
        raise ValueError(f"{key}: must be finite, got {value!r}")


@dataclass(frozen=True)
class MQAR(Task):
    """Multi-query associative recall (Zoology, Arora et al. 2023).

    Layout of one row, K = num_kv_pairs:
        k1 v1 k2 v2 ... kK vK | filler with each key queried once at an even offset 2 * gap
    Keys are distinct tokens from [1, V//2), values distinct tokens from [V//2, V) (disjoint halves; 0
    stays free as Zoology's blank). gap in [0, (L - 2K) // 2) is drawn without replacement with
    P(gap) ∝ (gap + 1) ** (power_a - 1): small power_a puts queries close to the pairs' end, 1.0 is
    uniform. The label at a query is the value that followed that key; the position after a query holds
    filler, not the value, so the answer is only ever in the pair section. Filler is uniform over the
    whole vocabulary (random_non_queries, Zoology's default) or the blank 0.
    """

    name: ClassVar[str] = "mqar"
    min_vocab_size: ClassVar[int] = 4

    vocab_size: int = 128
    seq_len: int = 64
    num_kv_pairs: int = 8
    power_a: float = 0.01
    random_non_queries: bool = True

    def _check(self) -> None:
        # Zoology's asserts (num_passes = 1): L even, V > L, 2K pair tokens + 2K query slots <= L.
        if self.seq_len % 2:
            raise ValueError(f"seq_len: must be even, got {self.seq_len}")
        if self.vocab_size <= self.seq_len:
            raise ValueError(f"vocab_size: must be > seq_len ({self.seq_len}), got {self.vocab_size}")
        if self.num_kv_pairs < 1:
            raise ValueError(f"num_kv_pairs: must be >= 1, got {self.num_kv_pairs}")
        if 4 * self.num_kv_pairs > self.seq_len:
            raise ValueError(
                f"num_kv_pairs: 4 * num_kv_pairs must be <= seq_len ({self.seq_len}), got {self.num_kv_pairs}"
            )
        # The gap law is a power law only for power_a > 0 (0 makes every weight 0).
        if self.power_a <= 0:
            raise ValueError(f"power_a: must be > 0, got {self.power_a}")
        # V > L >= 4K already gives K distinct keys in [1, V//2) and values in [V//2, V).

    def _generate(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        V, L, K = self.vocab_size, self.seq_len, self.num_kv_pairs
        half = V // 2
        keys = 1 + _sample_distinct(n, half - 1, K, gen)  # [n, K] in [1, V//2)
        values = half + _sample_distinct(n, V - half, K, gen)  # [n, K] in [V//2, V)

        context = 2 * K
        n_slots = (L - context) // 2
        gap_weights = torch.arange(1, n_slots + 1, dtype=torch.float64) ** (self.power_a - 1)
        gaps = _sample_distinct(n, n_slots, K, gen, weights=gap_weights)  # [n, K]; gaps[:, j] queries key j
        query_pos = context + 2 * gaps  # [n, K], even offsets <= L - 2

        if self.random_non_queries:
            inputs = torch.randint(0, V, (n, L), generator=gen)  # [n, L]
        else:
            inputs = torch.zeros(n, L, dtype=torch.int64)
        inputs[:, 0:context:2] = keys
        inputs[:, 1:context:2] = values
        inputs.scatter_(1, query_pos, keys)

        targets = torch.full((n, L), IGNORE, dtype=torch.int64)
        targets.scatter_(1, query_pos, values)
        return inputs, targets


@dataclass(frozen=True)
class Induction(Task):
    """Induction heads: [... TRIG x ... TRIG] -> x.

    A random sequence over [0, V - 1); the trigger TRIG = V - 1 appears exactly twice: once at a
    uniform position p in [0, L - 3], followed by some token x at p + 1, and again as the last input.
    Only the last position is scored, with label x, so the model must find the earlier trigger and copy
    what followed it.
    """

    name: ClassVar[str] = "induction"
    # Two non-trigger tokens so the answer is not a constant; room for TRIG x ... TRIG.
    min_vocab_size: ClassVar[int] = 3
    min_seq_len: ClassVar[int] = 3

    vocab_size: int = 32
    seq_len: int = 64

    @property
    def trigger(self) -> int:
        return self.vocab_size - 1

    def _generate(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        V, L = self.vocab_size, self.seq_len
        inputs = torch.randint(0, V - 1, (n, L), generator=gen)  # [n, L], never the trigger
        first = torch.randint(0, L - 2, (n, 1), generator=gen)  # [n, 1] in [0, L - 3]
        inputs.scatter_(1, first, self.trigger)
        inputs[:, -1] = self.trigger

        targets = torch.full((n, L), IGNORE, dtype=torch.int64)
        targets[:, -1] = inputs.gather(1, first + 1).squeeze(1)
        return inputs, targets


@dataclass(frozen=True)
class SelectiveCopy(Task):
    """Selective copying (Mamba, Gu & Dao 2023; layout of its safari/H3 generator).

    The first C = L - n_tokens positions hold n_tokens data tokens from [1, V - 1) at uniformly drawn
    distinct positions, NOISE = 0 everywhere else; the last n_tokens inputs are the marker V - 1.
    Reading the j-th marker (position C + j) the model must output the j-th data token in order of
    position; only those n_tokens positions are scored. The inputs there are markers, not the data, so
    every answer has to come from the noisy context.
    """

    name: ClassVar[str] = "selective_copy"
    # NOISE, MARKER and two data tokens, so the answer is not a constant.
    min_vocab_size: ClassVar[int] = 4
    noise: ClassVar[int] = 0

    vocab_size: int = 16
    seq_len: int = 64
    n_tokens: int = 8

    @property
    def marker(self) -> int:
        return self.vocab_size - 1

    def _check(self) -> None:
        if self.n_tokens < 1:
            raise ValueError(f"n_tokens: must be >= 1, got {self.n_tokens}")
        # The context (L - n_tokens positions) must have room for every data token.
        if 2 * self.n_tokens > self.seq_len:
            raise ValueError(
                f"n_tokens: 2 * n_tokens must be <= seq_len ({self.seq_len}), got {self.n_tokens}"
            )

    def _generate(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        V, L, M = self.vocab_size, self.seq_len, self.n_tokens
        context = L - M
        data = torch.randint(1, V - 1, (n, M), generator=gen)  # [n, M]
        # Sorted, so data[:, j] sits left of data[:, j + 1] and "in order" means in position order.
        positions = _sample_distinct(n, context, M, gen).sort(dim=1).values  # [n, M] in [0, C)

        inputs = torch.full((n, L), self.noise, dtype=torch.int64)
        inputs.scatter_(1, positions, data)
        inputs[:, context:] = self.marker

        targets = torch.full((n, L), IGNORE, dtype=torch.int64)
        targets[:, context:] = data
        return inputs, targets


TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (MQAR, Induction, SelectiveCopy)}


def check_task_params(name: str, params: dict[str, typing.Any]) -> None:
    """ValueError 'key: reason' for an unknown task, key or a value of the wrong type. The constraints
    between parameters (which involve seq_len) are checked when the task is made."""
    if name not in TASKS:
        raise ValueError(f"task: unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    cls = TASKS[name]
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key, value in params.items():
        if key not in known:
            raise ValueError(f"{key}: unknown parameter of task {name!r}; known: {', '.join(known)}")
        _check_type(key, value, hints[key])


def make_task(name: str, **params: typing.Any) -> Task:
    """The task `name` with `params` over its defaults; ValueError 'key: reason' for anything invalid."""
    check_task_params(name, params)
    return TASKS[name](**params)
