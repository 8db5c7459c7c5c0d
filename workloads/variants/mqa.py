"""Multi-query attention (Shazeer 2019): one KV head shared by all query heads."""

from workloads.variants.gqa import GroupedQueryAttention

VARIANT = GroupedQueryAttention(
    "mqa", "multi-query attention: one KV head for all query heads", kv_heads="one"
)
