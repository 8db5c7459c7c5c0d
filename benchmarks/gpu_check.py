"""The Python steps of benchmarks/gpu_check.sh (see its header for the whole check).

    python3 benchmarks/gpu_check.py env OUT/environment.md
    python3 benchmarks/gpu_check.py pytest OUT/kernel_tests.xml [--workers N] [PYTEST ARGS ...]
    python3 benchmarks/gpu_check.py sweep NAME --results DIR [OVERRIDES ...]
    python3 benchmarks/gpu_check.py collect DATASET OUT/NAME.parquet [--note FILE]
    python3 benchmarks/gpu_check.py report OUT [--notes DIR]

`pytest` and `sweep` run in this process with SIGINT and SIGTERM raising KeyboardInterrupt, even
when the shell started them with SIGINT ignored (a background job: Python then keeps it ignored):
the script's time box interrupts them cleanly, pytest still writes its JUnit XML and the sweep
compacts the rows it has. `collect` and `report` import no torch.
"""

import argparse
import collections
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Each step runs in its own process and time box, and imports what only it needs in its function:
# torch (seconds to import) where the device is measured or trials run, never in `collect` and
# `report`; pytest in `pytest`; Hydra and the orchestrator in `sweep` (the setup stage may have just
# installed Hydra); pandas and attnsweep's analysis where rows are read.

NVIDIA_SMI_FIELDS = (
    "name,driver_version,memory.total,memory.used,clocks.sm,clocks.mem,clocks.max.sm,clocks.max.mem,"
    "power.draw,power.limit,temperature.gpu,pstate,compute_mode,mig.mode.current"
)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def interruptible() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in this process, whatever it inherited."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _md_rows(rows: list[tuple[str, object]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


# ---------------------------------------------------------------------------------------- env


def nvidia_smi() -> tuple[list[str], str]:
    """(Markdown lines, one-line summary) of nvidia-smi's view of the GPUs; tolerates its absence."""
    if shutil.which("nvidia-smi") is None:
        return ["nvidia-smi: not found (no NVIDIA driver on this host)"], "no nvidia-smi"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={NVIDIA_SMI_FIELDS}", "--format=csv"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        try:
            plain = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
        except (OSError, subprocess.SubprocessError):
            plain = ""
        return [f"nvidia-smi query failed ({exc}); plain output:", "", "```", plain.strip(), "```"], "failed"
    lines = out.splitlines()
    header = [h.strip() for h in lines[0].split(",")]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(c.strip() for c in line.split(",")) + " |" for line in lines[1:]]
    return table, "; ".join(line.split(",")[0].strip() for line in lines[1:])


def _env_facts(device_type: str) -> list[tuple[str, object]]:
    """(name, value) of the versions, the host and the device; a GPU's properties when there is one."""
    import torch

    from workloads.environment import CODE_VERSION_ENV, code_version, device_name

    cuda = device_type == "cuda"
    facts: list[tuple[str, object]] = [
        (
            "code version",
            os.environ.get(CODE_VERSION_ENV) or f"{code_version()} ({CODE_VERSION_ENV} not set)",
        ),
        ("host", socket.gethostname()),
        ("date (UTC)", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("torch", torch.__version__),
        ("triton", _version("triton")),
        ("pandas", _version("pandas")),
        ("pyarrow", _version("pyarrow")),
        ("numpy", _version("numpy")),
        ("hydra-core / omegaconf", f"{_version('hydra-core')} / {_version('omegaconf')}"),
        ("pytest / pytest-xdist", f"{_version('pytest')} / {_version('pytest-xdist')}"),
        ("CUDA (torch)", torch.version.cuda or "—"),
        ("cuDNN", torch.backends.cudnn.version() if cuda else "—"),
        ("device", device_name(device_type)),
        ("CPU cores", os.cpu_count()),
        (
            "TRITON_INTERPRET",
            os.environ.get("TRITON_INTERPRET") or "unset (load_kernels sets 1 without a GPU)",
        ),
    ]
    if cuda:
        props = torch.cuda.get_device_properties(0)
        facts += [
            ("GPUs visible", torch.cuda.device_count()),
            ("compute capability", f"{props.major}.{props.minor}"),
            ("SM count", props.multi_processor_count),
            ("L2 cache", f"{getattr(props, 'L2_cache_size', 0) / 2**20:.0f} MiB"),
            ("memory", f"{props.total_memory / 2**30:.1f} GiB"),
        ]
    return facts


def _measured_peaks(device_type: str) -> list[tuple[str, float, float, float]]:
    """(dtype, matmul TFLOP/s, copy GB/s, seconds the measurement took) per dtype the sweeps use here."""
    from workloads.measure import device_peaks

    peaks = []
    # A CPU's bfloat16 matmul is slow to measure (15 s on 2 cores) and the CPU sweeps run float32.
    for dtype in ("bfloat16", "float32") if device_type == "cuda" else ("float32",):
        t0 = time.perf_counter()
        tflops, gbps = device_peaks(device_type, dtype)
        peaks.append((dtype, tflops, gbps, time.perf_counter() - t0))
    return peaks


def cmd_env(out_md: Path) -> int:
    start = time.perf_counter()
    smi_lines, smi_summary = nvidia_smi()
    import torch

    from workloads.environment import device_name

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    facts = _env_facts(device_type)
    peaks = _measured_peaks(device_type)
    lines = [
        "# Environment of the GPU check",
        "",
        *_md_rows(facts),
        "",
        "## nvidia-smi",
        "",
        *smi_lines,
        "",
        "## Measured ceilings (workloads.measure.device_peaks)",
        "",
        "| dtype | matmul TFLOP/s | copy GB/s | measured in s |",
        "|---|---|---|---|",
        *(f"| {d} | {t:.4g} | {g:.4g} | {s:.1f} |" for d, t, g, s in peaks),
        "",
        f"Probe took {time.perf_counter() - start:.1f} s.",
    ]
    out_md.write_text("\n".join(lines) + "\n")
    dtype, tflops, gbps, _ = peaks[0]
    print(
        f"environment: {device_name(device_type)}, torch {torch.__version__}, triton {_version('triton')}, "
        f"CUDA {torch.version.cuda or '-'}, nvidia-smi: {smi_summary}; {dtype} matmul {tflops:.4g} TFLOP/s, "
        f"copy {gbps:.4g} GB/s -> {out_md}"
    )
    return 0


# ------------------------------------------------------------------------------------- pytest


def default_workers() -> int:
    """xdist workers: the cores minus a few for the controller and Triton's compiler threads, at most 12."""
    return max(1, min(12, (os.cpu_count() or 1) - 4))


def cmd_pytest(xml: Path, workers: int | None, extra: list[str]) -> int:
    interruptible()
    import pytest

    workers = default_workers() if workers is None else workers
    args = ["tests/kernels", "-q", "--tb=short", "-rfE", "-p", "no:cacheprovider", f"--junitxml={xml}"]
    if workers > 1 and importlib.util.find_spec("xdist") is not None:
        args += ["-n", str(workers)]
        how = f"{workers} pytest-xdist workers"
    else:
        how = "serially" + ("" if workers <= 1 else " (pytest-xdist is not installed)")
    print(f"kernel tests: pytest {' '.join(args[1:] + extra)}  ({how})", flush=True)
    os.chdir(ROOT)
    try:
        return int(pytest.main(args + extra))
    except KeyboardInterrupt:  # interrupted before pytest's own session handling began
        return 130


# -------------------------------------------------------------------------------------- sweep


def last_wins(overrides: list[str]) -> list[str]:
    """Each key once, with its last value (attnsweep refuses a key given twice): the command line's
    overrides come after the script's defaults and GPU_CHECK_TABLE / GPU_CHECK_SMOKE, and win."""
    last = {o.split("=", 1)[0]: i for i, o in enumerate(overrides)}
    return [o for i, o in enumerate(overrides) if last[o.split("=", 1)[0]] == i]


def cmd_sweep(name: str, results: str, overrides: list[str]) -> int:
    interruptible()
    from orchestrator.cli import main

    base = [
        f"sweep={name}",
        "executor=local",
        "tracking.enabled=false",
        f"results_dir={results}",
        "report=false",
        "progress=lines",
    ]
    argv = ["run", *last_wins(base + overrides)]
    print(f"sweep: python3 -m orchestrator {' '.join(argv)}", flush=True)
    try:
        return main(argv)
    except KeyboardInterrupt:  # during start-up, before the CLI handles it
        print("gpu_check: sweep interrupted before it started its trials", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------------------ collect


def _status_counts(rows) -> str:
    counts = rows["status"].value_counts()
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "no rows"


def cmd_collect(dataset: str, out: Path, note: Path | None) -> int:
    """One Parquet file of every row the sweep's dataset holds (an interrupted run's parts included)."""
    from analysis.schema import RERUN_STATUSES
    from analysis.store import dataset_exists, read_results, repair

    def say(text: str, rc: int) -> int:
        print(f"collect: {text}", flush=True)
        if note is not None:
            note.write_text(text + "\n")
        return rc

    if not dataset_exists(dataset):
        return say(f"no results dataset at {dataset} (the sweep wrote no row)", 1)
    repair(dataset)  # a run killed between its compaction and the deletion of its parts
    rows = read_results(dataset)
    if rows.empty:
        return say(f"{dataset} holds no row", 1)
    rows.to_parquet(out, index=False)
    # error or timeout rows fail the stage; unsupported is a planned outcome, and an oom is noted.
    failed = rows[rows["status"].isin(RERUN_STATUSES)]
    text = f"{len(rows)} rows: {_status_counts(rows)}"
    return say(text + f" -> {out.name}", 3 if len(failed) else 0)


# ------------------------------------------------------------------------------------- report


def _first_line(text: object, limit: int = 160) -> str:
    lines = [line.strip() for line in str(text or "").strip().splitlines() if line.strip()]
    # A traceback's last line says what went wrong; a message's first line does.
    line = lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")
    line = line.replace("|", "\\|")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _test_error(message: str, text: str, limit: int = 160) -> str:
    """One line for a failed test: pytest's first `E   ...` line, else the failure's message."""
    for line in text.splitlines():
        if line.startswith("E ") and line[1:].strip():
            return _first_line(line[1:], limit)
    return _first_line(message or text, limit)


def kernel_tests(out: Path) -> tuple[list[str], list[str], str, bool]:
    """(kernel_tests.md lines, stdout lines, note, failed) from the JUnit XML."""
    xml = out / "kernel_tests.xml"
    if not xml.exists():
        text = "no JUnit XML: pytest did not finish writing it (killed, or not run); see gpu_check.log"
        return ["# Kernel tests", "", text], [f"kernel tests: {text}"], "no JUnit XML", True
    root = ET.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    passed, skipped, failures = 0, collections.Counter(), []
    seconds = sum(float(s.get("time", 0) or 0) for s in suites)
    for case in root.iter("testcase"):
        cls, name = case.get("classname", ""), case.get("name", "")
        # A test: classname "tests.kernels.test_x", name "test_y[...]"; a module that failed to
        # collect: classname "", name "tests.kernels.test_x".
        test = f"{cls.replace('.', '/')}.py::{name}" if cls else f"{name.replace('.', '/')}.py"
        bad = [c for c in case if c.tag in ("failure", "error")]
        skip = [c for c in case if c.tag == "skipped"]
        if bad:
            failures.extend((test, c.tag, c.get("message", ""), c.text or "") for c in bad)
        elif skip:
            skipped[_first_line(skip[0].get("message", ""), 100)] += 1
        else:
            passed += 1
    n_failed = len({f[0] for f in failures})
    note = f"{passed} passed, {n_failed} failed, {sum(skipped.values())} skipped"
    md = [
        "# Kernel tests (tests/kernels)",
        "",
        f"{note} in {seconds:.0f} s (JUnit XML: kernel_tests.xml).",
        "",
    ]
    if failures:
        md += ["## Failures", "", "| test | kind | error |", "|---|---|---|"]
        md += [f"| `{t}` | {kind} | {_test_error(msg, text)} |" for t, kind, msg, text in failures]
        md += [""]
        for test, kind, msg, text in failures:
            detail = "\n".join(text.strip().splitlines()[-40:])
            md += [f"### {test} ({kind})", "", "```text", msg.strip()[:2000], detail, "```", ""]
    if skipped:
        md += ["## Skipped", "", "| reason | tests |", "|---|---|"]
        md += [f"| {reason} | {n} |" for reason, n in skipped.most_common()]
    stdout = [f"kernel tests: {note}"]
    stdout += [f"  FAILED {_clip(t, 90)}: {_test_error(msg, text, 90)}" for t, _, msg, text in failures[:10]]
    if len(failures) > 10:
        stdout.append(f"  ... and {len(failures) - 10} more in kernel_tests.md")
    return md, stdout, note, bool(failures)


def _demoted(markdown: str, levels: int = 2) -> list[str]:
    """A report's summary.md under a level-3 heading: its headings `levels` deeper."""
    return [("#" * levels + line) if line.startswith("#") else line for line in markdown.splitlines()]


def _sweep_header(name: str, rows) -> tuple[list[str], list[str]]:
    """(Markdown, stdout) lines of a sweep's counts, where and with what it ran, the measured ceilings."""
    from analysis.blocks import fmt

    md = [f"## {name}", "", f"{len(rows)} rows: {_status_counts(rows)}."]
    if rows["interpreted"].fillna(False).any():
        md += ["", "**Triton ran in its CPU interpreter here: its latencies are not meaningful.**"]
    first = rows.iloc[0]
    md += [
        "",
        f"Device {first['device']}, code {first['code_version']}, torch {first['torch_version']}, "
        f"triton {first['triton_version']}; measured ceilings: matmul "
        + ", ".join(f"{d} {fmt(t)} TFLOP/s" for d, t in rows.groupby("dtype")["peak_tflops"].max().items())
        + f", copy {fmt(rows['peak_gbps'].max())} GB/s. "
        "Rate: TFLOP/s in prefill, GB/s in decode; % peak = roofline-bound time / measured time.",
        "",
    ]
    return md, [f"{name}: {len(rows)} rows: {_status_counts(rows)}"]


def _compact(table) -> str:
    """triton_vs_sdpa's table in short columns, as plain text: the caller sees ~12k characters of output."""
    from analysis.blocks import fmt

    short = {
        "phase": "phase",
        "variant": "variant",
        "seq_len": "N",
        "triton ms": "tri ms",
        "sdpa ms": "sdpa ms",
        "triton/sdpa time": "tri/sdpa",
        "best": "best",
        "triton/best time": "tri/best",
        "triton % peak": "tri %pk",
        "sdpa % peak": "sdpa %pk",
    }
    compact = table[[c for c in short if c in table.columns]].rename(columns=short)
    compact["phase"] = compact["phase"].replace(
        {"prefill causal": "prefill", "prefill non-causal": "pf-noncausal"}
    )
    return compact.to_string(index=False, float_format=fmt)


def _comparison(name: str, rows) -> tuple[list[str], list[str]]:
    """(Markdown, stdout) lines: Triton against SDPA where both ran; for gpu_table that alone, on stdout
    too; for the other sweeps, or without a comparison, the status of every variant, backend and phase."""
    from analysis.render import markdown_table
    from analysis.tables import status_grid, triton_vs_sdpa

    md: list[str] = []
    stdout: list[str] = []
    table = triton_vs_sdpa(rows)
    if not table.empty:
        md += ["### Triton against SDPA", "", markdown_table(table), ""]
    if name == "gpu_table" and not table.empty:
        stdout += [
            "",
            f"{name}: Triton against SDPA (median ms; tri/sdpa < 1: Triton faster; best: the fastest "
            "PyTorch kernel, tri/best Triton's time over it; % of the measured peak)",
            _compact(table),
        ]
    else:
        md += [
            "### Status by variant, backend and phase (ok: median ms)",
            "",
            markdown_table(status_grid(rows)),
            "",
        ]
    return md, stdout


def _rows_not_ok(rows) -> tuple[list[str], list[str]]:
    """(Markdown, stdout) lines of the rows that did not end as planned: all in tables.md, 8 on stdout."""
    from analysis.schema import PLANNED_STATUSES

    bad = rows[~rows["status"].isin(PLANNED_STATUSES)]
    if not len(bad):
        return [], []
    md = [
        "### Rows not ok",
        "",
        "| variant | backend | phase | N | status | error |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r.variant} | {r.backend} | {r.phase} | {r.seq_len} | {r.status} | {_first_line(r.error)} |"
        for r in bad.itertuples()
    ]
    md += [""]
    stdout = [
        f"  {r.status.upper()} {r.variant}/{r.backend}/{r.phase} N={r.seq_len}: " + _first_line(r.error, 96)
        for r in bad.head(8).itertuples()
    ]
    if len(bad) > 8:
        stdout.append(f"  ... and {len(bad) - 8} more in tables.md")
    return md, stdout


def _project_report(name: str, rows, scratch: Path) -> tuple[list[str], list[str]]:
    """(Markdown, stdout) lines of the project's own report: its summary.md, under this sweep's heading."""
    try:
        from analysis.report import build_report

        paths = build_report(rows, scratch / name)
        return [*_demoted(paths.markdown.read_text()), ""], []  # its title: "### attnsweep report: NAME"
    except Exception as exc:  # the tables above stand without it
        md = [f"(attnsweep's report could not be built: {_first_line(repr(exc))})", ""]
        return md, [f"  attnsweep report failed: {_first_line(repr(exc), 120)}"]


def sweep_section(name: str, out: Path, scratch: Path) -> tuple[list[str], list[str]]:
    """(tables.md, stdout) lines of one sweep's rows: counts, comparison, rows not ok, attnsweep's report."""
    import pandas as pd

    path = out / f"{name}.parquet"
    if not path.exists():
        return [f"## {name}", "", "No rows (the sweep did not run or wrote nothing).", ""], [
            f"{name}: no rows"
        ]
    rows = pd.read_parquet(path)
    md, stdout = [], []
    for part_md, part_stdout in (
        _sweep_header(name, rows),
        _comparison(name, rows),
        _rows_not_ok(rows),
        _project_report(name, rows, scratch),
    ):
        md += part_md
        stdout += part_stdout
    return md, stdout


def cmd_report(out: Path, notes: Path | None) -> int:
    kernel_md, stdout, note, failed = kernel_tests(out)
    (out / "kernel_tests.md").write_text("\n".join(kernel_md) + "\n")
    if notes is not None and (out / "kernel_tests.xml").exists():
        (notes / "kernels").write_text(note + "\n")
    md = ["# GPU check: tables", ""]
    with tempfile.TemporaryDirectory() as scratch:
        for name in ("gpu_table", "variants_smoke"):
            section, lines = sweep_section(name, out, Path(scratch))
            md += section
            stdout += ["", *lines]
    (out / "tables.md").write_text("\n".join(md) + "\n")
    print("\n".join(stdout))
    print(f"\nwrote {out / 'kernel_tests.md'} and {out / 'tables.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gpu_check.py", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("env", allow_abbrev=False, help="environment and measured ceilings as Markdown")
    env.add_argument("out", type=Path)
    tests = sub.add_parser(
        "pytest", allow_abbrev=False, help="tests/kernels with a JUnit XML (xdist when importable)"
    )
    tests.add_argument("xml", type=Path)
    tests.add_argument("--workers", type=int, default=None)
    sweep = sub.add_parser(
        "sweep", allow_abbrev=False, help="attnsweep run NAME locally, no tracking, no report"
    )
    sweep.add_argument("name")
    sweep.add_argument("--results", required=True)
    collect = sub.add_parser("collect", allow_abbrev=False, help="a sweep's dataset as one Parquet file")
    collect.add_argument("dataset")
    collect.add_argument("out", type=Path)
    collect.add_argument("--note", type=Path)
    report = sub.add_parser("report", allow_abbrev=False, help="kernel_tests.md and tables.md in OUT")
    report.add_argument("out", type=Path)
    report.add_argument("--notes", type=Path)
    args, rest = parser.parse_known_args(argv)
    if args.command == "pytest":
        return cmd_pytest(args.xml.resolve(), args.workers, rest)
    if args.command == "sweep":
        return cmd_sweep(args.name, args.results, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "env":
        return cmd_env(args.out)
    if args.command == "collect":
        return cmd_collect(args.dataset, args.out, args.note)
    return cmd_report(args.out, args.notes)


if __name__ == "__main__":
    sys.exit(main())
