#!/usr/bin/env bash
# Device-machine check. Issue 13: every CPU backend on each sample trace from one thread, and
# from 16 threads (a generated larson trace on as many workers; python-threads on 4), on the
# machine's 16 cores; the criterion benches on demand. Issue 14 (real GPU): the CUDA tests
# and a replay of the PyTorch snapshot and a generated gpu-training trace on cuda-malloc,
# cuda-async and gpu-pool, with the device named.
#
# A GPU machine may have no Rust toolchain, so the work is split in two:
#
#   ci/device-check.sh prepare      on the development machine: build the release `replay`,
#                                   the GPU test binaries and the `alloc` bench into
#                                   target/device-check/, stripped (copy that folder, or
#                                   the whole checkout, to the GPU host)
#   ci/device-check.sh [OUT_DIR]    on the GPU machine (default OUT_DIR: $OUT, else
#                                   target/device-check/out): run everything, write
#                                   results.json per trace, logs and summary.txt there
#   ci/device-check.sh bench [OUT]  on the device machine: issue 13's criterion benches only
#
# With cargo on the GPU machine, `run` builds what is missing itself. Environment: RUNS
# (default 5), SNAPSHOT (default ../shared/traces/pytorch/gpt_train.pickle.gz, else the
# copy `prepare` put beside the binaries, else the sample
# workloads/traces/pytorch-sample.pickle.gz), EVENTS (gpu-training events, default 100000).
# Exit code: 0 when every step ran and the GPU tests passed, 1 otherwise; a machine without a
# CUDA driver exits 3 ("skipped") after a successful CPU part, saying so.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bin_dir="$repo/target/device-check"

# A subshell, so that its `set -e` stays in it.
prepare() (
  set -e
  mkdir -p "$bin_dir"
  cargo build --release --locked --bin replay
  cp "${CARGO_TARGET_DIR:-target}/release/replay" "$bin_dir/replay"
  for t in gpu_device gpu_conformance gpu_growth; do
    # The test executable's path is the last "executable" cargo prints for it.
    exe=$(cargo test --release --locked -p pools --test "$t" --no-run --message-format=json 2>/dev/null |
      sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    [[ -n "$exe" ]] || { echo "device-check: could not build test $t" >&2; exit 1; }
    cp "$exe" "$bin_dir/$t"
  done
  # The criterion benches (`ci/device-check.sh bench`).
  exe=$(cargo bench -p pools --bench alloc --locked --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
  [[ -n "$exe" ]] || { echo "device-check: could not build bench alloc" >&2; exit 1; }
  cp "$exe" "$bin_dir/bench-alloc"
  # The real PyTorch snapshot, where this checkout sits beside ../shared: the device machine
  # gets only the checkout and the folders it is sent.
  snap="$repo/../shared/traces/pytorch/gpt_train.pickle.gz"
  if [[ -f "$snap" ]]; then install -m 0644 "$snap" "$bin_dir/"; fi
  # The release profile keeps debug info for valgrind; the copies do not need it, and
  # stripped they are several times smaller to send to the device machine (about 14 MiB
  # in all).
  if command -v strip >/dev/null; then strip "$bin_dir"/replay "$bin_dir"/gpu_* "$bin_dir"/bench-alloc; fi
  echo "device-check: binaries in $bin_dir (copy them with the checkout to the GPU machine)"
)

if [[ "${1:-}" == "prepare" ]]; then
  prepare
  exit $?
fi

# `ci/device-check.sh bench [OUT_DIR]`: only issue 13's criterion benches (pair/64 and churn
# through CpuPool, mutex and lock-free, against glibc and mimalloc), twice, on a quiet machine.
if [[ "${1:-}" == "bench" ]]; then
  out="${2:-${OUT:-$bin_dir/out}}"
  mkdir -p "$out"
  if [[ ! -x "$bin_dir/bench-alloc" ]]; then
    if command -v cargo >/dev/null; then
      prepare; [[ $? -eq 0 ]] || exit 1  # not `prepare || ...`: that would turn its set -e off
    else
      echo "device-check: no bench binary in $bin_dir and no cargo: run 'ci/device-check.sh prepare' first" >&2
      exit 1
    fi
  fi
  # criterion's own estimates come back with the figures.
  export CRITERION_HOME="$out/criterion"
  echo "cpu: $(nproc) cores ($(grep -m 1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //'))" |
    tee "$out/bench.txt"
  filter='pair/64/(fixed|size-classed|variable)/pool-mutex$|pair/64/(lock-free|glibc|mimalloc)|churn/(size-classed|variable)/pool-mutex$|churn/(lock-free|glibc|mimalloc)'
  for pass in 1 2; do
    echo "== criterion pass $pass" | tee -a "$out/bench.txt"
    "$bin_dir/bench-alloc" --bench "$filter" --warm-up-time 1 --measurement-time 3 --noplot 2>&1 |
      grep -E '^(pair|churn)|time:' | tee -a "$out/bench.txt" || exit 1
  done
  exit 0
fi

out="${1:-${OUT:-$bin_dir/out}}"
mkdir -p "$out"
runs="${RUNS:-5}"
events="${EVENTS:-100000}"
if [[ -n "${SNAPSHOT:-}" && ! -f "$SNAPSHOT" ]]; then
  echo "device-check: SNAPSHOT=$SNAPSHOT does not exist; using the default" >&2
fi
snapshot="${SNAPSHOT:-$repo/../shared/traces/pytorch/gpt_train.pickle.gz}"
[[ -f "$snapshot" ]] || snapshot="$bin_dir/gpt_train.pickle.gz"
[[ -f "$snapshot" ]] || snapshot="$repo/workloads/traces/pytorch-sample.pickle.gz"
summary="$out/summary.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }

if [[ ! -x "$bin_dir/replay" ]]; then
  if command -v cargo >/dev/null; then
    prepare; [[ $? -eq 0 ]] || exit 1  # not `prepare || ...`: that would turn its set -e off
  else
    say "device-check: no binaries in $bin_dir and no cargo: run 'ci/device-check.sh prepare' first"
    exit 1
  fi
fi

status=0

# One replay of the check: `replay_step DIR TITLE REPLAY-ARGS...` replays into DIR (its
# table in DIR.txt, its errors in DIR.err) and puts the table into the summary, or says
# that it failed and sets status 1.
replay_step() {
  local dir="$1" title="$2"
  shift 2
  say ""
  say "== $title"
  if "$bin_dir/replay" "$@" --runs "$runs" --out "$dir" >"$dir.txt" 2>"$dir.err"; then
    cat "$dir.txt" >>"$summary"
    cat "$dir.txt"
  else
    say "replay failed: $(tail -n 3 "$dir.err")"
    status=1
  fi
}
cpu_backends=pool-fixed,pool-variable,pool-lockfree,system,mimalloc

say "cpu: $(nproc) cores ($(grep -m 1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //'))"

# Issue 13: one thread, on a quiet machine (the issue's own reference setting): every sample
# trace against every CPU backend.
for trace in "$repo"/workloads/traces/*.csv*; do
  name=$(basename "$trace")
  replay_step "$out/one-$name" "$name, one thread (issue 13)" \
    "$trace" --threads 1 --backends "$cpu_backends"
done

# Issue 13: the pools from many threads, on this machine's cores (16 on the device
# machines), with the same release binary: a generated larson trace of 16 threads on as
# many workers, and the 5-thread python sample on 4 workers. CPU only: it runs with or
# without a GPU driver.
cores=$(nproc)
workers=$((cores < 16 ? cores : 16))
larson="$out/larson16.csv"
if "$bin_dir/replay" gen larson --threads 16 --events 1000000 -o "$larson" >>"$out/gen.log" 2>&1; then
  for run in "larson16.csv:$larson:$workers" \
      "python-threads.csv.zst:$repo/workloads/traces/python-threads.csv.zst:$((workers < 4 ? workers : 4))"; do
    IFS=: read -r name trace w <<<"$run"
    replay_step "$out/scaling-$name" "$name, $w workers (issue 13)" \
      "$trace" --threads "$w" --backends "$cpu_backends"
  done
else
  say "replay gen larson failed: $(tail -n 3 "$out/gen.log")"
  status=1
fi
rm -f "$larson"
say ""

if ! nvidia-smi -L >"$out/nvidia-smi.txt" 2>&1; then
  say "device-check: GPU part skipped: no NVIDIA driver here (nvidia-smi failed: $(head -n 1 "$out/nvidia-smi.txt"))"
  # 3 ("skipped") only when the CPU part succeeded; its failure wins.
  exit $((status ? 1 : 3))
fi
say "device: $(head -n 1 "$out/nvidia-smi.txt")"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >>"$summary" 2>&1

for t in gpu_device gpu_conformance gpu_growth; do
  if "$bin_dir/$t" --nocapture >"$out/$t.log" 2>&1; then
    result="ok"
  else
    result="FAILED"
    status=1
  fi
  skipped=$(grep -c "skipped:" "$out/$t.log")
  say "test $t: $result ($(grep -E '^test result' "$out/$t.log" | tail -n 1)); 'skipped:' lines: $skipped"
  if [[ "$t" == gpu_device && "$skipped" != 0 ]]; then
    say "  gpu_device skipped on a GPU machine: the CUDA path did not run"
    status=1
  fi
done

gen_trace="$out/gpu-training.csv"
"$bin_dir/replay" gen gpu-training -o "$gen_trace" --events "$events" >>"$out/gen.log" 2>&1 || status=1

for trace in "$snapshot" "$gen_trace" "$repo/workloads/traces/sqlite.csv.zst"; do
  [[ -f "$trace" ]] || continue
  name=$(basename "$trace")
  replay_step "$out/gpu-$name" "$name" \
    "$trace" --backends cuda-malloc,cuda-async,gpu-pool --simulate-gpu 80GiB
done

say ""
say "device-check: figures in $out (results.json per trace); record them in docs/performance.md with the card's name"
exit $status
