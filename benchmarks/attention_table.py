"""Triton against SDPA per phase and sequence length: latency, TFLOP/s, GB/s, % of measured peak.

One line per phase (causal and non-causal prefill apart), variant and length: each backend's median
latency, TFLOP/s (GB/s in decode) and % of the peak, and Triton's time over SDPA's
(`analysis.tables.triton_vs_sdpa`). Runs a sweep in this process (executor=local, no MLflow: GPU
hosts often have neither Ray nor a tracking server), keeps its Parquet rows under
benchmarks/results/<device>/, and prints and saves the table as Markdown. Default sweep: `gpu_table`
(bf16, head_dim 128, causal and non-causal prefill and decode, 1k-32k tokens).

    python benchmarks/attention_table.py                       # on a GPU host
    python benchmarks/attention_table.py sweep.axes.seq_len=[64] sweep.axes.n_heads=[4] \\
        sweep.axes.n_kv_heads=[2] sweep.axes.head_dim=[32] sweep.axes.dtype=[float32]   # CPU check
"""

import re
import sys
import tempfile
from pathlib import Path

from analysis.render import markdown_table
from analysis.store import read_results
from analysis.tables import triton_vs_sdpa
from orchestrator.config import load_config
from orchestrator.sweep import run_sweep

RESULTS = Path(__file__).resolve().parent / "results"


def main(overrides: list[str]) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        defaults = [
            "sweep=gpu_table",
            "executor=local",
            "tracking.enabled=false",
            "report=false",
            "progress=lines",
            f"results_dir={scratch}",
        ]
        given = {o.split("=", 1)[0] for o in overrides}  # a key may be given once: the user's wins
        cfg = load_config([d for d in defaults if d.split("=", 1)[0] not in given] + overrides)
        outcome = run_sweep(cfg)
        rows = read_results(outcome.results_path, run_id=outcome.run_id)
    device = str(rows["device"].iloc[0])
    out_dir = RESULTS / re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-").lower()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{cfg.sweep.name}-{outcome.run_id}"
    rows.to_parquet(out_dir / f"{stem}.parquet", index=False)
    failures, first = rows[rows["status"] != "ok"], rows.iloc[0]
    text = "\n".join(
        [
            f"# {cfg.sweep.name} on {device}",
            "",
            f"Run {outcome.run_id}, code {first['code_version']}, torch {first['torch_version']}, "
            f"triton {first['triton_version']}, driver {first['driver_version'] or '-'}.",
            f"Measured ceilings: matmul {rows['peak_tflops'].max():.3g} TFLOP/s "
            f"({', '.join(cfg.sweep.axes.dtype)}), copy {rows['peak_gbps'].max():.3g} GB/s.",
            "pct_peak = roofline-bound time / measured time, in %.",
            "**Triton ran in its CPU interpreter here: its latencies are not meaningful.**"
            if rows["interpreted"].any()
            else "",
            "",
            markdown_table(triton_vs_sdpa(rows)),
            "",
            f"{len(failures)} trial(s) not ok: "
            + "; ".join(
                f"{r.variant}/{r.backend}/{r.phase} n={r.seq_len}: {r.status}" for r in failures.itertuples()
            ),
        ]
    )
    (out_dir / f"{stem}.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
