"""How long `attnsweep report` takes on a large dataset: 100k synthetic, schema-valid rows (issue 7 point 5).

    python benchmarks/report_scale.py               # 100k rows, result kept under benchmarks/results/
    python benchmarks/report_scale.py --rows 20000 --no-save

The dataset is written through the real store (`analysis.store.ResultStore`, RESULT_SCHEMA) as two
runs of one sweep, then `analysis.report.build_report` runs on the directory, as the CLI would.
Shape of the data (a large variants sweep on an H100, plus a CPU CI run):
- 20 (variant, KV heads, params) lines × 3 backends × phases prefill, decode, train × seq_len
  128..8192 (some not powers of two) × batch 1/4 × heads 8/12/16/32 × head_dim 64/128 × bf16/fp16
  × causal (prefill and train); a second run repeats a random tenth of the trials and tops up to N rows;
- combinations a variant does not offer are `unsupported` rows (as the real planner records them);
  torch-ref runs out of memory on its largest score matrices; a few errors with tracebacks and timeouts;
- a share of the triton rows come from a CPU host where Triton ran in its interpreter (`interpreted`);
- 135 `quality` rows (5 variants × 3 head counts × 3 seeds).
Latency follows a roofline with per-backend efficiencies and noise, so plots and speedups look real.

The table gives the rows, the seconds to synthesise and write them (not part of the target), the
build time of the report by stage and in all, and the sizes of index.html and summary.md. The target:
under 30 s on this 2-core machine.
"""

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.render import markdown_table  # noqa: E402
from analysis.report import build_report  # noqa: E402
from analysis.schema import COLUMNS  # noqa: E402
from analysis.store import ResultStore  # noqa: E402

TARGET_S = 30.0
SWEEP = "scale"
GPU, CPU = "NVIDIA H100 80GB HBM3", "AMD EPYC 7B13 (CPU)"
PEAK_TFLOPS = {"bfloat16": 640.0, "float16": 655.0, "float32": 48.0}
PEAK_GBPS = 2950.0
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
# (variant, n_kv_heads rule, params): "H" = as many KV heads as query heads.
LINES = [
    ("mha", "H", "{}"),
    ("mqa", 1, "{}"),
    *((v, g, "{}") for v in ("gqa", "wgqa", "kha") for g in (2, 4)),
    *((v, 2, "{}") for v in ("cog", "rela")),
    ("moba", 2, '{"block_size":512,"top_k":3}'),
    ("mla", 1, '{"latent_dim":512,"rope_dim":64}'),
    *(("moh", "H", f'{{"shared_heads":1,"top_k":{k}}}') for k in (2, 4)),
    ("moa", 1, '{"top_k":2}'),
    ("streaming", "H", '{"retrieval_heads":0.25,"sink":128,"window":256}'),
    ("pruned", "H", '{"keep_heads":0.5}'),
    ("dcmha", "H", '{"rank":2}'),
    ("mta", "H", '{"head_group":2,"key_kernel":11,"query_kernel":6}'),
    ("switchhead", "H", '{"experts":4,"top_k":2}'),
]
GENERIC = {"mha", "mqa", "gqa", "wgqa", "kha", "mla", "pruned"}  # every backend, every phase
OFFERED = {  # (variant, backend) -> phases beyond GENERIC; torch-ref offers everything listed
    ("streaming", "torch-sdpa"): {"prefill", "decode", "train"},
    ("streaming", "triton"): {"prefill", "decode"},
    ("moba", "torch-sdpa"): {"prefill", "train"},
    ("moh", "torch-sdpa"): {"prefill", "train"},
    ("cog", "triton"): {"prefill"},
    ("moba", "triton"): {"prefill"},
    ("moh", "triton"): {"prefill"},
}
NO_DECODE = {"dcmha", "mta", "switchhead"}
SEQ_LENS = [128, 384, 512, 1000, 1024, 2048, 3000, 4096, 8192]
EFFICIENCY = {"torch-ref": 0.08, "torch-sdpa": 0.45, "triton": 0.55}
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "kernels/flash_attention/forward.py", line 88, in flash_attention\n'
    "    _forward[grid](q, k, v, o, BLOCK_M=128, BLOCK_N=128)\n"
    "RuntimeError: triton: out of resources: shared memory, required: 262144, hardware limit: 232448"
)
EMPTY_ROW = dict.fromkeys(COLUMNS)  # every column of a result row, None until a trial fills it


def offered(variant: str, backend: str, phase: str) -> bool:
    if phase == "decode" and variant in NO_DECODE:
        return False
    return backend == "torch-ref" or variant in GENERIC or phase in OFFERED.get((variant, backend), ())


def grid() -> pd.DataFrame:
    """Every point of the synthetic sweep, one row each."""
    axes = {
        "backend": ["torch-ref", "torch-sdpa", "triton"],
        "phase": ["prefill", "decode", "train"],
        "seq_len": SEQ_LENS,
        "batch": [1, 4],
        "n_heads": [8, 12, 16, 32],
        "head_dim": [64, 128],
        "dtype": ["bfloat16", "float16"],
        "causal": [True, False],
    }
    points = pd.DataFrame({"line": range(len(LINES))})
    for name, values in axes.items():
        points = points.merge(pd.DataFrame({name: values}), how="cross")
    points = points[~(points["phase"].eq("decode") & ~points["causal"])]  # decode is causal
    lines = pd.DataFrame(LINES, columns=["variant", "kv_rule", "params"])
    points = points.join(lines, on="line").drop(columns="line").reset_index(drop=True)
    rule = points["kv_rule"]
    points["n_kv_heads"] = np.where(rule.eq("H"), points["n_heads"], pd.to_numeric(rule, errors="coerce"))
    return points.drop(columns="kv_rule")


def roofline(p: pd.DataFrame, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per point, the toy model's numbers: work and traffic, a roofline latency at a noisy per-backend
    efficiency (at a few triton points Triton is interpreted: 400 times slower), peak memory and error."""
    n = len(p)
    size = p["dtype"].map(DTYPE_BYTES).to_numpy()
    b, s, h, kv, d = (
        p[c].to_numpy(dtype=float) for c in ("batch", "seq_len", "n_heads", "n_kv_heads", "head_dim")
    )
    queries = np.where(p["phase"].eq("decode"), 1.0, s)
    keys = np.where(p["causal"], (s + 1) / 2, s)
    keys = np.where(p["phase"].eq("decode"), s, keys)
    flops = 4 * b * h * queries * keys * d * np.where(p["phase"].eq("train"), 3.5, 1.0)
    bytes_moved = (2 * b * h * queries * d + 2 * b * kv * s * d) * size
    peak = p["dtype"].map(PEAK_TFLOPS).to_numpy()
    interpreted = p["backend"].eq("triton").to_numpy() & (rng.random(n) < 0.06)
    efficiency = p["backend"].map(EFFICIENCY).to_numpy() * rng.uniform(0.6, 1.1, n)
    seconds = np.maximum(flops / (peak * 1e12), bytes_moved / (PEAK_GBPS * 1e9)) / efficiency + 8e-6
    latency = seconds * 1e3 * np.where(interpreted, 400.0, 1.0)
    mla = p["variant"].eq("mla").to_numpy()
    per_token = np.where(mla, (512 + 64) * size, 2 * kv * d * size).astype(np.int64)
    scores = np.where(p["backend"].eq("torch-ref"), b * h * queries * s * 4, 0)
    peak_mem = (bytes_moved + scores) * np.where(p["phase"].eq("train"), 3, 1)
    rel_err = np.where(size == 2, 3e-3, 2e-6) * rng.lognormal(0, 0.5, n)
    rel_err = np.where(p["backend"].eq("torch-ref"), rel_err / 4, rel_err)
    return {
        "flops": flops,
        "bytes_moved": bytes_moved,
        "peak_tflops": peak,
        "interpreted": interpreted,
        "latency_ms": latency,
        "kv_bytes_per_token": per_token,
        "kv_cache_bytes": per_token * b * s,
        "n_params": 4 * (h * d) ** 2,
        "score_bytes": scores,
        "peak_mem_bytes": peak_mem,
        "rel_err": rel_err,
    }


def statuses(p: pd.DataFrame, rng: np.random.Generator, model: dict[str, np.ndarray]) -> np.ndarray:
    """Per point, its status as a sweep would record it: a few errors and timeouts, oom where torch-ref's
    score matrices outgrow the GPU, unsupported where the variant does not offer the trial."""
    status = np.array(["ok"] * len(p), dtype=object)
    roll = rng.random(len(p))
    status[roll < 0.004] = "error"
    status[(roll >= 0.004) & (roll < 0.005)] = "timeout"
    status[(model["score_bytes"] * 3 > 60e9) & ~model["interpreted"]] = "oom"
    offers = [offered(v, bk, ph) for v, bk, ph in zip(p["variant"], p["backend"], p["phase"], strict=True)]
    status[~np.array(offers)] = "unsupported"
    return status


def trial_row(r, i: int, point: dict, when: dt.datetime, run_id: str, attempt: int) -> dict:
    """Point i's row up to its outcome: configuration, identity, where it ran and the cost model."""
    config = dict(
        variant=r.variant, backend=r.backend, phase=r.phase, batch=int(r.batch), seq_len=int(r.seq_len),
        n_heads=int(r.n_heads), n_kv_heads=int(r.n_kv_heads), head_dim=int(r.head_dim),
        dtype=r.dtype, causal=bool(r.causal), params=r.params,
    )  # fmt: skip
    interpreted = point["interpreted"]
    row = dict(EMPTY_ROW, **config)
    row.update(
        sweep=SWEEP,
        run_id=run_id,
        trial_id=hashlib.sha1(repr(tuple(config.values())).encode()).hexdigest()[:16],
        attempt=attempt,
        status=point["status"],
        device=CPU if interpreted else GPU,
        host="ci-runner-3" if interpreted else "gpu-node-07",
        node="",
        gpu="" if interpreted else str(i % 8),
        interpreted=bool(interpreted),
        torch_version="2.13.0+cu128",
        triton_version="3.6.0",
        driver_version="" if interpreted else "580.65.06",
        code_version="4f2c9e1",
        timestamp=when + dt.timedelta(milliseconds=20 * i),
        kv_bytes_per_token=int(point["kv_bytes_per_token"]),
        kv_cache_bytes=int(point["kv_cache_bytes"]),
        n_params=int(point["n_params"]),
        flops=float(point["flops"]),
        bytes_moved=float(point["bytes_moved"]),
    )
    return row


def outcome(r, point: dict) -> dict:
    """The columns a trial's status fills: its error, or, when ok, its measurements."""
    status = point["status"]
    if status == "unsupported":
        return {"error": f"{r.variant} offers no {r.phase} on {r.backend}"}
    if status == "oom":
        return {"error": "CUDA out of memory. Tried to allocate 16.00 GiB"}
    if status == "timeout":
        return {"error": "trial exceeded its 1800 s limit"}
    if status == "error":
        return {"error": TRACEBACK}
    t, interpreted = point["latency_ms"], point["interpreted"]
    flops, bytes_moved = point["flops"], point["bytes_moved"]
    ceiling_tflops, ceiling_gbps = (1.2, 40.0) if interpreted else (point["peak_tflops"], PEAK_GBPS)
    bound = max(flops / (ceiling_tflops * 1e12), bytes_moved / (ceiling_gbps * 1e9))
    return dict(
        latency_ms=float(t),
        latency_ms_p20=float(t * 0.97),
        latency_ms_p80=float(t * 1.04),
        n_samples=100,
        compile_ms=900.0 if r.backend == "triton" else None,
        tflops=float(flops / t / 1e9),
        gbps=float(bytes_moved / t / 1e6),
        peak_tflops=float(ceiling_tflops),
        peak_gbps=float(ceiling_gbps),
        pct_peak=float(100 * bound / (t / 1e3)),
        peak_mem_bytes=None if interpreted else int(point["peak_mem_bytes"]),
        max_abs_err=float(point["rel_err"] * 4),
        rel_err=float(point["rel_err"]),
    )


def measure(
    points: pd.DataFrame, rng: np.random.Generator, when: dt.datetime, run_id: str, attempt: int = 1
) -> list[dict]:
    """Result rows for the points: a toy roofline model for the numbers, statuses as a sweep would get."""
    p = points.reset_index(drop=True)
    model = roofline(p, rng)
    model["status"] = statuses(p, rng, model)
    rows = []
    for i, r in enumerate(p.itertuples(index=False)):
        point = {name: values[i] for name, values in model.items()}
        rows.append(trial_row(r, i, point, when, run_id, attempt) | outcome(r, point))
    return rows


def quality_rows(when: dt.datetime, run_id: str) -> list[dict]:
    rows, base = [], EMPTY_ROW
    spec = json.dumps({"task": "mqar", "task_params": {"num_kv_pairs": 8}, "train": {"steps": 1000}})
    kv = {
        "mha": lambda h: h,
        "gqa": lambda h: max(1, h // 2),
        "mqa": lambda h: 1,
        "moh": lambda h: h,
        "mla": lambda h: 1,
    }
    for i, (variant, heads, seed) in enumerate((v, h, s) for v in kv for h in (2, 4, 8) for s in range(3)):
        accuracy = min(0.99, 0.45 + 0.06 * heads + 0.03 * (variant in ("mha", "moh")) + 0.01 * seed)
        n_kv, head_dim = kv[variant](heads), 64 // heads
        row = dict(base, sweep=SWEEP, run_id=run_id, trial_id=f"q{i:05d}", attempt=1, variant=variant)
        row.update(backend="torch-ref", phase="quality", batch=32, seq_len=64, n_heads=heads, n_kv_heads=n_kv)
        row.update(head_dim=head_dim, dtype="float32", causal=True, params="{}", quality=spec, seed=seed)
        row.update(status="ok", task="mqar", accuracy=accuracy, loss=2.5 * (1 - accuracy), train_steps=1000)
        row.update(model_params=90_000 + heads, kv_bytes_per_token=2 * n_kv * head_dim * 4, device=CPU)
        row.update(host="ci-runner-3", node="", interpreted=False, torch_version="2.13.0+cpu")
        row.update(code_version="4f2c9e1", timestamp=when)
        rows.append(row)
    return rows


def synthesise(results_dir: Path, n_rows: int, seed: int = 0) -> Path:
    """Write n_rows rows as two runs of one sweep (the second repeats trials of the first); its path."""
    rng = np.random.default_rng(seed)
    t1 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.timezone.utc)
    points = grid()
    quality = quality_rows(t1, "run-20261120-a")
    first = points.sample(n=min(len(points), int(n_rows * 0.92)), random_state=seed).sort_index()
    rerun = first.sample(n=max(0, n_rows - len(first) - len(quality)), random_state=seed + 1, replace=False)
    for run_id, rows in (
        ("run-20261120-a", measure(first, rng, t1, "run-20261120-a") + quality),
        ("run-20261121-b", measure(rerun, rng, t1 + dt.timedelta(days=1), "run-20261121-b", attempt=2)),
    ):
        store = ResultStore(results_dir, SWEEP, run_id)
        for start in range(0, len(rows), 20_000):
            store.append(rows[start : start + 20_000])
        store.finalize()
    return results_dir / SWEEP


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        line.split(":", 1)[1].strip()
        for line in cpuinfo.read_text().splitlines()
        if line.startswith("model name")
    ]
    return names[0] if names else platform.machine()


def code_version() -> str:
    """The commit, '+dirty' when tracked files changed (as the result rows record it)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True
        )
    except OSError:
        return "unknown"
    return (
        commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
        if commit.returncode == 0
        else "unknown"
    )


def measure_build(n_rows: int) -> dict:
    """Synthesise the dataset in a scratch directory and time the report's build on it: the numbers kept,
    in the order of the JSON record (rows as read back, seconds, sizes of the two files)."""
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        dataset = synthesise(Path(scratch) / "results", n_rows)
        synthesis_s = time.perf_counter() - start
        start = time.perf_counter()
        paths = build_report(dataset, Path(scratch) / "report")
        build_s = time.perf_counter() - start
        html_bytes, md_bytes = paths.html.stat().st_size, paths.markdown.stat().st_size
        n_rows = len(pd.read_parquet(dataset, columns=["status"]))
    return {
        "rows": n_rows,
        "synthesis_s": synthesis_s,
        "build_s": build_s,
        "stage_s": paths.seconds,
        "html_bytes": html_bytes,
        "markdown_bytes": md_bytes,
    }


def result_text(result: dict, rows_asked: int, when: dt.datetime) -> str:
    """The Markdown kept and printed: how it was measured, the summary table, the seconds by stage."""
    stages = pd.DataFrame({"stage": list(result["stage_s"]), "seconds": list(result["stage_s"].values())})
    summary = pd.DataFrame(
        [
            {
                "rows": result["rows"],
                "synthesise + write s": round(result["synthesis_s"], 1),
                "report build s": round(result["build_s"], 2),
                "target s": TARGET_S,
                "index.html KiB": round(result["html_bytes"] / 1024),
                "summary.md KiB": round(result["markdown_bytes"] / 1024, 1),
            }
        ]
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    header = (
        f"# Report build time at {result['rows']} rows ({cpu_name()}, {os.cpu_count()} cores)\n\n"
        f"Measured {when.isoformat()} with `python benchmarks/report_scale.py"
        f"{'' if rows_asked == 100_000 else f' --rows {rows_asked}'}`, code {code_version()}; "
        f"pandas {pd.__version__}, matplotlib {matplotlib.__version__}, Python {platform.python_version()}. "
        f"Load average after: {load}."
    )
    return f"{header}\n\n{markdown_table(summary)}\n\nBy stage:\n\n{markdown_table(stages)}\n"


def keep(text: str, result: dict, when: dt.datetime) -> None:
    """The text and a JSON record of the result under benchmarks/results/cpu-amd-epyc/."""
    out = ROOT / "benchmarks" / "results" / "cpu-amd-epyc"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"report_scale-n{result['rows']}-{when:%Y%m%d-%H%M%S}"
    (out / f"{stem}.md").write_text(text, encoding="utf-8")
    record = {
        **result,
        "target_s": TARGET_S,
        "pandas": pd.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "code": code_version(),
        "cpu": cpu_name(),
        "measured": when.isoformat(),
    }
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"kept: benchmarks/results/cpu-amd-epyc/{stem}.md and .json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--no-save", action="store_true", help="print only; write nothing under benchmarks/")
    args = parser.parse_args()
    result = measure_build(args.rows)
    when = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    text = result_text(result, args.rows, when)
    print(text)
    print(
        f"report_build_s={result['build_s']:.2f} target_s={TARGET_S} rows={result['rows']} "
        f"html_kib={result['html_bytes'] / 1024:.0f}"
    )
    if not args.no_save:
        keep(text, result, when)
    return 0 if result["build_s"] < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
