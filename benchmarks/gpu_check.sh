#!/usr/bin/env bash
# benchmarks/gpu_check.sh: what a short GPU session measures, in at most 8 minutes, into one folder.
#
#   ATTNSWEEP_CODE_VERSION=<commit> bash benchmarks/gpu_check.sh OUT_DIR [OVERRIDES ...]   # GPU host
#   bash benchmarks/gpu_check.sh --cpu-smoke OUT_DIR [OVERRIDES ...]       # the same, tiny, on a CPU
#
# Stages, in this order, each in its own time box (GNU timeout: SIGINT at the end of the box minus
# GRACE, SIGKILL at its end). An interrupted stage keeps what it measured (pytest writes its JUnit XML,
# the sweep compacts the rows it has) and the next stage runs all the same:
#   setup    Hydra from the wheelhouse: pip install --no-index --target $GPU_CHECK_SITE .whl/*.whl, skipped
#            when hydra is importable already; then environment.md (nvidia-smi, versions, SMs, L2,
#            measured matmul and copy ceilings, code version)                          budget  40 s
#   kernels  pytest tests/kernels (compiled on a GPU; pytest-xdist workers when importable)
#            -> kernel_tests.xml                                                       budget 125 s
#   table    attnsweep run sweep=gpu_table: Triton vs SDPA (automatic and pinned) and flex, prefill
#            (causal and not) and decode, 1k-32k, 324 trials -> gpu_table.parquet (10 s of the box are
#            kept to collect the rows; the box was sized for the former 108 trials)
#                                                                                      budget 185 s
#   smoke    attnsweep run sweep=variants_smoke (every variant x backend x phase, tiny shapes,
#            144 trials; measure.warmup_ms=5 measure.rep_ms=20) -> variants_smoke.parquet
#                                                                                      budget  80 s
#   report   kernel_tests.md (passed / failed with each failure's error) and tables.md (Triton vs SDPA
#            per phase and length: ms, TFLOP/s or GB/s, % of peak, Triton/SDPA; status grid; rows not
#            ok; attnsweep's own report summary of each sweep)                         budget  30 s
# A stage may also use what the stages before it left unused; the budgets (460 s) fit the whole box
# GPU_CHECK_TOTAL_S (480 s): the script ends within it whatever the stages do. It then writes
# summary.md, prints the stage table last (a caller that keeps only the tail of the output sees it),
# and exits 1 when a stage failed or ran out of time (sweeps: a row with status error or timeout
# fails the stage), 2 on a usage error, else 0.
#
# OUT_DIR gets at most 8 files, no folders: environment.md kernel_tests.xml kernel_tests.md
# gpu_table.parquet variants_smoke.parquet tables.md summary.md gpu_check.log (everything printed).
#
# OVERRIDES: Hydra overrides for both sweeps (e.g. measure.rep_ms=50); they win over the settings
# below. --cpu-smoke: small defaults for a CPU (Triton interpreted): 8 kernel tests (-k custom_scale),
# gpu_table at N=32,64 with 2/1 heads of 16 in float32, variants_smoke for gqa, mla, moh in prefill
# and decode; about 2 minutes on 2 cores. Environment (all optional):
#   PYTHON                    the interpreter (default python3)
#   ATTNSWEEP_CODE_VERSION    the code version the rows and environment.md record (the host has no .git)
#   GPU_CHECK_STAGES          which stages, comma-separated (default setup,kernels,table,smoke,report)
#   GPU_CHECK_TABLE           more overrides of gpu_table   (shell words, e.g. "sweep.axes.seq_len=[1024]")
#   GPU_CHECK_SMOKE           more overrides of variants_smoke
#   GPU_CHECK_PYTEST          more pytest arguments         (e.g. "-k 'decode and not mla'")
#   GPU_CHECK_WORKERS         pytest-xdist workers (default cores - 4, at most 12; 1: serial)
#   GPU_CHECK_BUDGET_SETUP, _KERNELS, _TABLE, _SMOKE, _REPORT    a stage's budget in seconds
#   GPU_CHECK_TOTAL_S         the whole run's box (default 480)
#   GPU_CHECK_GRACE_S         seconds from SIGINT to SIGKILL at the end of a box (default 15)
#   GPU_CHECK_SITE            where the wheels are installed (default /tmp/attnsweep-site)
#   GPU_CHECK_WHEELS          the wheelhouse (default .whl/ of this checkout, from `make wheelhouse`)

set -u -o pipefail

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; }

CPU_SMOKE=0
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-smoke) CPU_SMOKE=1 ;;
        -h | --help) usage; exit 0 ;;
        *) ARGS+=("$1") ;;
    esac
    shift
done
if [ ${#ARGS[@]} -lt 1 ]; then
    echo "gpu_check: usage: bash benchmarks/gpu_check.sh [--cpu-smoke] OUT_DIR [OVERRIDES ...]" >&2
    exit 2
fi
OUT=${ARGS[0]}
case "$OUT" in /*) ;; *) OUT=$PWD/$OUT ;; esac # relative to where the script was called from
OVERRIDES=("${ARGS[@]:1}")

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
if ! command -v timeout >/dev/null; then
    echo "gpu_check: GNU timeout (coreutils) is needed to time-box the stages" >&2
    exit 2
fi
STAGES=${GPU_CHECK_STAGES:-setup,kernels,table,smoke,report}
budget() {
    case "$1" in
        setup) echo "${GPU_CHECK_BUDGET_SETUP:-40}" ;;
        kernels) echo "${GPU_CHECK_BUDGET_KERNELS:-125}" ;;
        table) echo "${GPU_CHECK_BUDGET_TABLE:-185}" ;;
        smoke) echo "${GPU_CHECK_BUDGET_SMOKE:-80}" ;;
        report) echo "${GPU_CHECK_BUDGET_REPORT:-30}" ;;
    esac
}
selected() { [[ ",$STAGES," == *",$1,"* ]]; }
for stage in ${STAGES//,/ }; do
    if [ -z "$(budget "$stage")" ]; then
        echo "gpu_check: GPU_CHECK_STAGES: unknown stage '$stage' (known: setup,kernels,table,smoke,report)" >&2
        exit 2
    fi
done

mkdir -p "$OUT" || exit 2
# An earlier check's files would pass for this one's (say, its JUnit XML when pytest is killed).
rm -f "$OUT"/{environment.md,kernel_tests.xml,kernel_tests.md,gpu_table.parquet,variants_smoke.parquet,tables.md,summary.md}
LOG=$OUT/gpu_check.log
: >"$LOG"
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
NOTES=$SCRATCH/notes
mkdir -p "$NOTES"
trap 'rm -rf "$SCRATCH"' EXIT

if [ "$CPU_SMOKE" = 1 ]; then
    : "${GPU_CHECK_PYTEST=-k custom_scale}"
    # The CPU smoke checks the script's mechanics: SDPA's CUDA-only kernels and flex's compiles stay out.
    : "${GPU_CHECK_TABLE=sweep.backends=[torch-sdpa,triton] sweep.axes.seq_len=[32,64] sweep.axes.batch=[1] sweep.axes.n_heads=[2] sweep.axes.n_kv_heads=[1] sweep.axes.head_dim=[16] sweep.axes.dtype=[float32] measure.min_run_time_s=0.01}"
    : "${GPU_CHECK_SMOKE=sweep.variants=[gqa,mla,moh] sweep.phases=[prefill,decode] measure.min_run_time_s=0.01}"
else
    : "${GPU_CHECK_PYTEST=}"
    : "${GPU_CHECK_TABLE=}"
    : "${GPU_CHECK_SMOKE=measure.warmup_ms=5 measure.rep_ms=20}"
fi
eval "PYTEST_ARGS=($GPU_CHECK_PYTEST)" || exit 2
eval "TABLE_ARGS=($GPU_CHECK_TABLE)" || exit 2
eval "SMOKE_ARGS=($GPU_CHECK_SMOKE)" || exit 2
TOTAL=${GPU_CHECK_TOTAL_S:-480}
GRACE=${GPU_CHECK_GRACE_S:-15}
COLLECT=10 # seconds of a sweep stage's box kept for collecting its rows
SITE=${GPU_CHECK_SITE:-/tmp/attnsweep-site}
WHEELS=${GPU_CHECK_WHEELS:-$ROOT/.whl}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

say() { echo "$*" | tee -a "$LOG"; }
now() { date +%s; }
START=$(now)

# Each stage's deadline: the start plus the budgets up to it (what earlier stages leave unused rolls
# over), but never later than the whole box minus the budgets of the stages after it.
ALL_STAGES=(setup kernels table smoke report)
declare -A DEADLINE
acc=0
for stage in "${ALL_STAGES[@]}"; do
    selected "$stage" && acc=$((acc + $(budget "$stage")))
    DEADLINE[$stage]=$((START + acc))
done
later=0
for ((i = ${#ALL_STAGES[@]} - 1; i >= 0; i--)); do
    stage=${ALL_STAGES[i]}
    cap=$((START + TOTAL - later))
    [ "${DEADLINE[$stage]}" -gt "$cap" ] && DEADLINE[$stage]=$cap
    selected "$stage" && later=$((later + $(budget "$stage")))
done

# boxed [--group] UNTIL CMD...: run CMD (output to stdout and the log) until the epoch second UNTIL:
# SIGINT GRACE seconds before it, SIGKILL at it. Sets RC (124: it ran out of time) and SECS.
# The signals go to CMD alone (a sweep: a Triton compiler subprocess interrupted under it would turn
# the trial in flight into an error row), or with --group to its whole process group (pytest: its
# xdist workers stop too, and the controller still writes the JUnit XML).
boxed() {
    local mode=(--foreground) until t0 box soft
    if [ "$1" = --group ]; then
        mode=()
        shift
    fi
    until=$1
    shift
    t0=$(now)
    box=$((until - t0))
    [ "$box" -lt 2 ] && box=2
    soft=$((box - GRACE))
    [ "$soft" -lt 1 ] && soft=1
    timeout ${mode[@]+"${mode[@]}"} --signal=INT --kill-after=$((box - soft)) "$soft" "$@" </dev/null 2>&1 | tee -a "$LOG"
    RC=${PIPESTATUS[0]}
    [ "$RC" = 137 ] && RC=124 # SIGKILLed at the end of its box
    SECS=$(($(now) - t0))
}

declare -A STATUS NOTE SPENT
record() { # STAGE STATUS NOTE
    STATUS[$1]=$2
    NOTE[$1]=$3
    SPENT[$1]=$(($(now) - STAGE_T0))
    say "== $1: $2${3:+ ($3)} after ${SPENT[$1]} s"
}
status_of() { # a step's exit code as a status word
    case "$1" in
        0) echo ok ;;
        124) echo timeout ;;
        *) echo "failed (rc $1)" ;;
    esac
}
begin() {
    STAGE_T0=$(now)
    say ""
    say "== $1: until +$((DEADLINE[$1] - START)) s of $TOTAL s ($(date -u +%H:%M:%S) UTC)"
}

stage_setup() {
    begin setup
    local note=""
    if "$PY" -c "import hydra, omegaconf" 2>/dev/null; then
        note="hydra-core $("$PY" -c 'from importlib.metadata import version; print(version("hydra-core"))') already importable: wheelhouse install skipped"
        say "setup: $note"
    elif ! compgen -G "$WHEELS/*.whl" >/dev/null; then
        say "gpu_check: hydra-core is not installed and $WHEELS/ has no wheels: run 'make wheelhouse' on a machine with network and carry .whl/"
        boxed "${DEADLINE[setup]}" "$PY" benchmarks/gpu_check.py env "$OUT/environment.md"
        record setup "failed" "no .whl/ and no hydra-core"
        return
    else
        say "setup: installing $(cd "$WHEELS" && echo *.whl) into $SITE"
        boxed $(($(now) + 60 < DEADLINE[setup] ? $(now) + 60 : DEADLINE[setup])) \
            "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$SITE" "$WHEELS"/*.whl
        if [ "$RC" != 0 ]; then
            record setup "$(status_of "$RC")" "pip install from .whl/ failed"
            return
        fi
        export PYTHONPATH="$ROOT:$SITE${PYTHONPATH#"$ROOT"}"
        if ! "$PY" -c "import hydra, omegaconf, yaml" 2>&1 | tee -a "$LOG"; then
            record setup "failed" "hydra installed from .whl/ but does not import (see the log)"
            return
        fi
        note="hydra-core installed from .whl/ into $SITE"
    fi
    boxed "${DEADLINE[setup]}" "$PY" benchmarks/gpu_check.py env "$OUT/environment.md"
    record setup "$(status_of "$RC")" "$note"
}

stage_kernels() {
    begin kernels
    local workers=()
    [ -n "${GPU_CHECK_WORKERS:-}" ] && workers=(--workers "$GPU_CHECK_WORKERS")
    boxed --group "${DEADLINE[kernels]}" "$PY" benchmarks/gpu_check.py pytest "$OUT/kernel_tests.xml" \
        ${workers[@]+"${workers[@]}"} ${PYTEST_ARGS[@]+"${PYTEST_ARGS[@]}"}
    case "$RC" in
        1) record kernels "failed" "tests failed" ;;
        5) record kernels "failed" "no test collected" ;;
        *) record kernels "$(status_of "$RC")" "" ;;
    esac
}

# sweep_stage STAGE SWEEP EXTRA...: the sweep, then its rows into OUT/SWEEP.parquet.
sweep_stage() {
    local stage=$1 sweep=$2 status
    shift 2
    begin "$stage"
    if ! "$PY" -c "import hydra" 2>/dev/null; then
        record "$stage" "skipped" "hydra-core is not importable (see setup)"
        return
    fi
    boxed $((DEADLINE[$stage] - COLLECT)) "$PY" benchmarks/gpu_check.py sweep "$sweep" \
        --results "$SCRATCH/results" "$@"
    status=$(status_of "$RC")
    [ "$RC" = 130 ] && status="interrupted" # e.g. SIGINT from outside
    boxed "${DEADLINE[$stage]}" "$PY" benchmarks/gpu_check.py collect "$SCRATCH/results/$sweep" \
        "$OUT/$sweep.parquet" --note "$NOTES/$stage"
    if [ "$status" = ok ] && [ "$RC" = 3 ]; then
        status="failed"
    elif [ "$status" = ok ] && [ "$RC" != 0 ]; then
        status="failed (collect rc $RC)"
    fi
    record "$stage" "$status" "$(cat "$NOTES/$stage" 2>/dev/null)"
}

stage_report() {
    begin report
    boxed "${DEADLINE[report]}" "$PY" benchmarks/gpu_check.py report "$OUT" --notes "$NOTES"
    record report "$(status_of "$RC")" ""
}

say "gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S') UTC on $(hostname), code ${ATTNSWEEP_CODE_VERSION:-unknown}, python $PY"
say "gpu_check: stages $STAGES, box $TOTAL s, OUT $OUT$([ "$CPU_SMOKE" = 1 ] && echo ', --cpu-smoke')"
if [ -z "${ATTNSWEEP_CODE_VERSION:-}" ] && [ ! -e "$ROOT/.git" ]; then
    say "gpu_check: warning: no .git here and ATTNSWEEP_CODE_VERSION is not set: the rows cannot say which code ran"
fi
say "gpu_check: overrides: both sweeps [${OVERRIDES[*]-}] gpu_table [${TABLE_ARGS[*]-}] variants_smoke [${SMOKE_ARGS[*]-}] pytest [${PYTEST_ARGS[*]-}]"
selected setup && stage_setup
selected kernels && stage_kernels
selected table && sweep_stage table gpu_table ${TABLE_ARGS[@]+"${TABLE_ARGS[@]}"} ${OVERRIDES[@]+"${OVERRIDES[@]}"}
selected smoke && sweep_stage smoke variants_smoke ${SMOKE_ARGS[@]+"${SMOKE_ARGS[@]}"} ${OVERRIDES[@]+"${OVERRIDES[@]}"}
selected report && stage_report

# The summary: summary.md, and the same table last on stdout.
[ -s "$NOTES/kernels" ] && NOTE[kernels]=$(cat "$NOTES/kernels") # counted by the report stage
FAILED=0
{
    echo "# GPU check summary"
    echo
    echo "Code ${ATTNSWEEP_CODE_VERSION:-unknown}, host $(hostname), started $(date -u -d "@$START" '+%Y-%m-%d %H:%M:%S') UTC, $(($(now) - START)) s of a $TOTAL s box."
    echo "Overrides: both sweeps \`${OVERRIDES[*]-}\`; gpu_table \`${TABLE_ARGS[*]-}\`; variants_smoke \`${SMOKE_ARGS[*]-}\`; pytest \`${PYTEST_ARGS[*]-}\`."
    echo
    echo "| stage | status | seconds | until s | note |"
    echo "|---|---|---|---|---|"
    for stage in "${ALL_STAGES[@]}"; do
        if ! selected "$stage"; then
            echo "| $stage | not run | | | not in GPU_CHECK_STAGES |"
            continue
        fi
        echo "| $stage | ${STATUS[$stage]:-not run} | ${SPENT[$stage]:-} | $((DEADLINE[$stage] - START)) | ${NOTE[$stage]:-} |"
    done
} >"$OUT/summary.md"
for stage in "${ALL_STAGES[@]}"; do
    selected "$stage" && [ "${STATUS[$stage]:-}" != ok ] && FAILED=1
done
# The log is the one file that could grow past what comes back (16 MiB): keep its tail.
if [ "$(stat -c %s "$LOG")" -gt $((15 * 1024 * 1024)) ]; then
    tail -c $((15 * 1024 * 1024)) "$LOG" >"$SCRATCH/log" && cat "$SCRATCH/log" >"$LOG"
fi
{
    echo
    cat "$OUT/summary.md"
    echo
    echo "files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
    echo "gpu_check: $([ "$FAILED" = 0 ] && echo 'every stage ok' || echo 'a stage failed or ran out of time'), exit $FAILED"
} | tee -a "$LOG"
exit "$FAILED"
