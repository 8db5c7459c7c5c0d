"""A test-only plugin whose backend is malformed (a '/' in its name would break VARIANT/BACKEND)."""

from workloads.backends import Backend

BACKEND = Backend("mine/fast", "a name the report's VARIANT/BACKEND syntax could not parse")
