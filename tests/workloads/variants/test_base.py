"""The cost arithmetic every variant shares (base.py)."""

import pytest

from workloads.variants.base import dtype_size, mean_keys_per_query


@pytest.mark.parametrize(
    "n_q,n_k,causal",
    [(7, 7, True), (3, 10, True), (10, 3, True), (5, 9, False)],
    ids=["square", "nq<nk", "nq>nk", "noncausal"],
)
def test_mean_keys_per_query_counts_the_mask(n_q, n_k, causal):
    seen = [min(n_k, max(0, i + n_k - n_q + 1)) if causal else n_k for i in range(n_q)]
    assert mean_keys_per_query(n_q, n_k, causal) == pytest.approx(sum(seen) / n_q)


@pytest.mark.parametrize("dtype,size", [("float32", 4), ("float16", 2), ("bfloat16", 2)])
def test_dtype_size(dtype, size):
    assert dtype_size(dtype) == size
