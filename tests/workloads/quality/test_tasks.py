"""make_task / Task.generate: shapes, exactly which positions are scored, labels recoverable by each
task's rule, constraints, determinism and vocabulary ranges."""

import dataclasses

import pytest
import torch

from workloads.quality.tasks import IGNORE, MQAR, TASKS, Induction, SelectiveCopy, make_task

N = 64  # examples per check: enough rows to hit edge positions, small enough to stay instant

# (task, params) with shapes that are not powers of two wherever the task allows.
CASES = [
    pytest.param("mqar", {}, id="mqar-default"),
    pytest.param("mqar", {"vocab_size": 50, "seq_len": 46, "num_kv_pairs": 11}, id="mqar-V50-L46-K11-tight"),
    pytest.param(
        "mqar", {"vocab_size": 301, "seq_len": 96, "num_kv_pairs": 5, "power_a": 1.0}, id="mqar-uniform"
    ),
    pytest.param("mqar", {"vocab_size": 7, "seq_len": 6, "num_kv_pairs": 1}, id="mqar-smallest"),
    pytest.param("mqar", {"random_non_queries": False}, id="mqar-blank-filler"),
    pytest.param("induction", {}, id="induction-default"),
    pytest.param("induction", {"vocab_size": 3, "seq_len": 3}, id="induction-smallest"),
    pytest.param("induction", {"vocab_size": 97, "seq_len": 77}, id="induction-V97-L77"),
    pytest.param("selective_copy", {}, id="selcopy-default"),
    pytest.param("selective_copy", {"vocab_size": 4, "seq_len": 2, "n_tokens": 1}, id="selcopy-smallest"),
    pytest.param("selective_copy", {"vocab_size": 11, "seq_len": 50, "n_tokens": 25}, id="selcopy-no-noise"),
    pytest.param("selective_copy", {"vocab_size": 29, "seq_len": 100, "n_tokens": 13}, id="selcopy-V29-L100"),
]


def generate(name: str, params: dict, n: int = N, seed: int = 0):
    task = make_task(name, **params)
    inputs, targets = task.generate(n, seed)
    return task, inputs, targets


@pytest.mark.parametrize("name,params", CASES)
def test_shapes_dtypes_and_vocab(name, params):
    task, inputs, targets = generate(name, params)
    assert inputs.shape == targets.shape == (N, task.seq_len)
    assert inputs.dtype == targets.dtype == torch.int64
    assert inputs.is_contiguous() and targets.is_contiguous()
    assert 0 <= inputs.min() and inputs.max() < task.vocab_size
    scored = targets != IGNORE
    assert scored.any(dim=1).all(), "every example must score at least one position"
    assert (0 <= targets[scored]).all() and (targets[scored] < task.vocab_size).all()


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("name", sorted(TASKS))
def test_example_counts(name, n):
    task, inputs, targets = generate(name, {}, n=n)
    assert inputs.shape == targets.shape == (n, task.seq_len)


def _mqar_cases():
    return [c for c in CASES if c.values[0] == "mqar"]


@pytest.mark.parametrize("name,params", _mqar_cases())
def test_mqar_pairs_and_queries(name, params):
    task, inputs, targets = generate(name, params)
    V, L, K = task.vocab_size, task.seq_len, task.num_kv_pairs
    keys, values = inputs[:, 0 : 2 * K : 2], inputs[:, 1 : 2 * K : 2]  # [N, K] each

    # Keys from [1, V//2), values from [V//2, V): disjoint halves; both distinct within an example.
    assert (keys >= 1).all() and (keys < V // 2).all()
    assert (values >= V // 2).all() and (values < V).all()
    assert (keys.sort(dim=1).values.diff(dim=1) > 0).all()
    assert (values.sort(dim=1).values.diff(dim=1) > 0).all()

    # Scored: exactly K positions, all after the pairs at even offsets from them.
    scored = targets != IGNORE
    assert (scored.sum(dim=1) == K).all()
    assert not scored[:, : 2 * K].any()
    pos = scored.nonzero()[:, 1].view(N, K)  # [N, K] ascending
    assert ((pos - 2 * K) % 2 == 0).all() and (pos <= L - 2).all()

    # Each key is queried once, and the label is the value that followed it in the pair section.
    queried = inputs.gather(1, pos)  # [N, K]
    assert torch.equal(queried.sort(dim=1).values, keys.sort(dim=1).values)
    slot = (queried.unsqueeze(2) == keys.unsqueeze(1)).int().argmax(dim=2)  # [N, K] index of the pair
    assert torch.equal(targets.gather(1, pos), values.gather(1, slot))


def test_mqar_filler():
    _, blank_in, blank_tg = generate("mqar", {"random_non_queries": False})
    scored = blank_tg != IGNORE
    query_region = blank_in[:, 2 * 8 :]
    # Without random filler, everything in the query region except the queried keys is the blank 0.
    assert (query_region[~scored[:, 2 * 8 :]] == 0).all()

    _, rand_in, rand_tg = generate("mqar", {"random_non_queries": True})
    filler = rand_in[:, 16:][rand_tg[:, 16:] == IGNORE]
    # Zoology fills with uniform tokens over the whole vocabulary: both halves show up.
    assert (filler < 64).any() and (filler >= 64).any()


def test_mqar_power_law_pulls_queries_close():
    """power_a -> 0 puts most queries right after the pairs; power_a = 1 spreads them uniformly."""
    params = {"vocab_size": 257, "seq_len": 256, "num_kv_pairs": 4}
    mean_gap = {}
    for a in (0.01, 1.0):
        _, _, targets = generate("mqar", {**params, "power_a": a}, n=500)
        pos = (targets != IGNORE).nonzero()[:, 1]
        mean_gap[a] = ((pos - 8) // 2).double().mean().item()
    n_slots = (256 - 8) // 2
    # Uniform choice of 4 of 124 slots averages (124 - 1) / 2; the power law stays far below it.
    assert abs(mean_gap[1.0] - (n_slots - 1) / 2) < 5
    assert mean_gap[0.01] < 0.5 * mean_gap[1.0]


@pytest.mark.parametrize("name,params", [c for c in CASES if c.values[0] == "induction"])
def test_induction_trigger_and_label(name, params):
    task, inputs, targets = generate(name, params)
    L, trig = task.seq_len, task.trigger
    assert trig == task.vocab_size - 1

    # Only the last position is scored.
    scored = targets != IGNORE
    assert scored[:, -1].all() and not scored[:, :-1].any()

    # The trigger appears exactly twice: once in [0, L - 3], and as the last input.
    is_trig = inputs == trig
    assert (is_trig.sum(dim=1) == 2).all() and is_trig[:, -1].all()
    first = is_trig.int().argmax(dim=1)  # [N] first trigger position
    assert (first <= L - 3).all()

    # The label is what followed the earlier trigger.
    assert torch.equal(targets[:, -1], inputs[torch.arange(N), first + 1])


def test_induction_first_trigger_spreads():
    _, inputs, _ = generate("induction", {"vocab_size": 5, "seq_len": 7}, n=400)
    first = (inputs == 4).int().argmax(dim=1)
    # Every allowed position 0..L-3 is used, so neither end of the range is silently excluded.
    assert set(first.tolist()) == set(range(5))


@pytest.mark.parametrize("name,params", [c for c in CASES if c.values[0] == "selective_copy"])
def test_selective_copy_layout_and_labels(name, params):
    task, inputs, targets = generate(name, params)
    L, M, V = task.seq_len, task.n_tokens, task.vocab_size
    context = L - M

    # Scored: exactly the last n_tokens positions, whose inputs are all the marker.
    scored = targets != IGNORE
    assert scored[:, context:].all() and not scored[:, :context].any()
    assert (inputs[:, context:] == task.marker).all()

    # The context holds n_tokens data tokens from [1, V - 1) among noise, and no marker.
    ctx = inputs[:, :context]
    is_data = ctx != task.noise
    assert (is_data.sum(dim=1) == M).all()
    assert (ctx[is_data] >= 1).all() and (ctx[is_data] < V - 1).all()

    # Labels are the data tokens in order of position (boolean indexing reads row-major, left to right).
    assert torch.equal(targets[:, context:], ctx[is_data].view(N, M))


@pytest.mark.parametrize(
    "name,params,key",
    [
        pytest.param("mqar", {"seq_len": 63, "vocab_size": 128}, "seq_len", id="mqar-odd-L"),
        pytest.param("mqar", {"seq_len": 64, "vocab_size": 64}, "vocab_size", id="mqar-V-eq-L"),
        pytest.param("mqar", {"seq_len": 30, "num_kv_pairs": 8}, "num_kv_pairs", id="mqar-4K-gt-L"),
        pytest.param("mqar", {"num_kv_pairs": 0}, "num_kv_pairs", id="mqar-K0"),
        pytest.param("mqar", {"power_a": 0.0}, "power_a", id="mqar-power0"),
        pytest.param("mqar", {"power_a": float("nan")}, "power_a", id="mqar-power-nan"),
        pytest.param("mqar", {"seq_len": 64.0}, "seq_len", id="mqar-float-L"),
        pytest.param("mqar", {"random_non_queries": 1}, "random_non_queries", id="mqar-int-flag"),
        pytest.param("induction", {"vocab_size": 2}, "vocab_size", id="induction-V2"),
        pytest.param("induction", {"seq_len": 2}, "seq_len", id="induction-L2"),
        pytest.param("induction", {"vocab_size": True}, "vocab_size", id="induction-bool-V"),
        pytest.param("selective_copy", {"seq_len": 15, "n_tokens": 8}, "n_tokens", id="selcopy-2M-gt-L"),
        pytest.param("selective_copy", {"n_tokens": 0}, "n_tokens", id="selcopy-M0"),
        pytest.param("selective_copy", {"vocab_size": 3}, "vocab_size", id="selcopy-V3"),
        pytest.param("selective_copy", {"num_kv_pairs": 4}, "num_kv_pairs", id="selcopy-unknown-param"),
        pytest.param("copy", {}, "task", id="unknown-task"),
    ],
)
def test_invalid_params_name_the_key(name, params, key):
    with pytest.raises(ValueError, match=rf"^{key}: "):
        make_task(name, **params)


@pytest.mark.parametrize("n,seed,key", [(-1, 0, "n_examples"), (2.0, 0, "n_examples"), (2, "0", "seed")])
def test_invalid_generate_args(n, seed, key):
    with pytest.raises(ValueError, match=rf"^{key}: "):
        make_task("mqar").generate(n, seed)


@pytest.mark.parametrize("name,params", CASES)
def test_deterministic_per_seed(name, params):
    task = make_task(name, **params)
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    a_in, a_tg = task.generate(N, seed=7)
    # Only the local generator is used: the global RNG is not advanced here, and not read below.
    assert torch.equal(torch.get_rng_state(), global_state)
    torch.manual_seed(999)
    b_in, b_tg = make_task(name, **params).generate(N, seed=7)
    assert torch.equal(a_in, b_in) and torch.equal(a_tg, b_tg)

    c_in, c_tg = task.generate(N, seed=8)
    assert not (torch.equal(a_in, c_in) and torch.equal(a_tg, c_tg))


def test_registry_and_defaults():
    assert TASKS == {"mqar": MQAR, "induction": Induction, "selective_copy": SelectiveCopy}
    for name, cls in TASKS.items():
        task = make_task(name)
        assert type(task) is cls and task.name == name
        assert make_task(name, **task.params()) == task
    with pytest.raises(dataclasses.FrozenInstanceError):  # parameters cannot change after the checks ran
        make_task("mqar").seq_len = 7  # type: ignore[misc]
