"""Multi-head attention (Vaswani et al. 2017): one KV head per query head; the n_kv_heads axis is ignored."""

from workloads.variants.gqa import GroupedQueryAttention

VARIANT = GroupedQueryAttention("mha", "multi-head attention: n_kv_heads = n_heads", kv_heads="n_heads")
