"""What a report's speedups are measured against: one variant on one backend (`VARIANT/BACKEND`).
Apart from the report's modules so that the config can check it without loading them."""

from dataclasses import dataclass

DEFAULT_BASELINE = "mha/torch-sdpa"


@dataclass(frozen=True)
class Baseline:
    variant: str
    backend: str

    @classmethod
    def parse(cls, text: "str | Baseline") -> "Baseline":
        """'VARIANT/BACKEND' (e.g. 'gqa/triton'); ValueError naming the expected form otherwise."""
        if isinstance(text, Baseline):
            return text
        variant, _, backend = str(text).strip().partition("/")
        if not variant.strip() or not backend.strip() or "/" in backend:
            raise ValueError(f"baseline must be VARIANT/BACKEND, e.g. {DEFAULT_BASELINE}; got {text!r}")
        return cls(variant.strip(), backend.strip())

    def __str__(self) -> str:
        return f"{self.variant} on {self.backend}"
