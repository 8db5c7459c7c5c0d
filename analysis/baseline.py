"""What a report's speedups are measured against: `best` (the default), or one variant on one backend
(`VARIANT/BACKEND`). Apart from the report's modules so that the config can check it without loading them.

`best`: at each point, the fastest ok row among the backends PyTorch ships (VENDOR_BACKENDS) of the
baseline variant, mha, in a phase where mha has such rows; else of each row's own variant (a sweep of
one variant's kernels). `VARIANT/best` names another variant than mha.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config imports this module: pandas only where a check runs
    import pandas as pd

BEST = "best"
BEST_VARIANT = "mha"
DEFAULT_BASELINE = BEST
# The backends PyTorch ships (SDPA's dispatcher, each of its kernels pinned, FlexAttention): the
# candidates of `best`, in the order that breaks a tie. workloads.backends marks the same ones vendor.
VENDOR_BACKENDS = ("torch-sdpa", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "sdpa-math", "flex")
MEMORY_BACKEND = "torch-sdpa"  # the memory section's backend under `best`: what PyTorch picks itself


class BaselineError(ValueError):
    """A well-formed baseline that names what the dataset does not hold."""


@dataclass(frozen=True)
class Baseline:
    variant: str
    backend: str  # a backend, or BEST

    @classmethod
    def parse(cls, text: "str | Baseline") -> "Baseline":
        """'best', 'VARIANT/BACKEND' (e.g. 'gqa/triton') or 'VARIANT/best'; ValueError naming the
        expected form otherwise."""
        if isinstance(text, Baseline):
            return text
        if str(text).strip() == BEST:
            return cls(BEST_VARIANT, BEST)
        variant, _, backend = str(text).strip().partition("/")
        if not variant.strip() or not backend.strip() or "/" in backend:
            raise ValueError(f"baseline must be VARIANT/BACKEND (e.g. mha/torch-sdpa) or best; got {text!r}")
        return cls(variant.strip(), backend.strip())

    @property
    def is_best(self) -> bool:
        return self.backend == BEST

    @property
    def label(self) -> str:
        """As written on the command line: 'best', 'gqa/best', 'mha/torch-sdpa'."""
        return BEST if self.is_best and self.variant == BEST_VARIANT else f"{self.variant}/{self.backend}"

    @property
    def memory_backend(self) -> str:
        """The backend the memory section prefers: the baseline's, MEMORY_BACKEND for best."""
        return MEMORY_BACKEND if self.is_best else self.backend

    def check(self, rows: "pd.DataFrame") -> None:
        """BaselineError (one line) when a fixed baseline's variant, backend or pair has no row at all.
        `best` always passes: a phase without a vendor row says so in the report."""
        if self.is_best:
            return
        for column, name in (("variant", self.variant), ("backend", self.backend)):
            if not rows[column].eq(name).any():
                present = ", ".join(sorted(map(str, rows[column].dropna().unique())))
                raise BaselineError(
                    f"baseline {self.label}: no row has {column} {name} (the dataset has {present})"
                )
        if not (rows["variant"].eq(self.variant) & rows["backend"].eq(self.backend)).any():
            raise BaselineError(f"baseline {self.label}: no row of {self.variant} on {self.backend}")

    def __str__(self) -> str:
        if self.is_best:
            return f"the fastest PyTorch kernel of {self.variant}"
        return f"{self.variant} on {self.backend}"
