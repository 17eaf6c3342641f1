#!/usr/bin/env bash
# Runs every cargo-fuzz target (or the ones named) for a bounded time, on the stable toolchain.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]      # default: 60 s each, job_decode and transform
#
# Needs `cargo install cargo-fuzz --locked` once. No nightly: `--sanitizer none` drops the
# nightly-only AddressSanitizer (safe Rust does not need it); coverage instrumentation and
# libFuzzer work on stable. `-O -a`: optimised, with overflow checks and debug assertions on.
# The corpus is seeded with valid jobs, a minimal payload, and every `$POKEAPI_SAMPLES/pokemon/*.json`
# when that is set. A crash stops that target, its input is in fuzz/artifacts/<target>/, and the
# script exits 1 after the other targets ran. Replay one input with
#   cargo fuzz run --sanitizer none -O -a <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(job_decode transform)

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
  exit 2
fi

mkdir -p corpus/job_decode corpus/transform
printf '%s' '{"v":1,"resource":"pokemon","id":25,"name":"pikachu"}' >corpus/job_decode/seed-pikachu
printf '%s' '{"v":1,"resource":"pokemon","id":10001}' >corpus/job_decode/seed-no-name
printf '%s' '{"name":"x","id":2147483647,"resource":"pokemon","v":1,"extra":[{}]}' \
  >corpus/job_decode/seed-reordered
printf '%s' '{"id":25,"name":"pikachu","height":4,"weight":60,"base_experience":112,
"types":[{"slot":1,"type":{"name":"electric"}}],
"abilities":[{"slot":3,"ability":{"name":"lightning-rod"}},{"slot":1,"ability":null}],
"stats":[{"base_stat":35,"effort":0,"stat":{"name":"hp"}}],
"sprites":{"front_default":"https://example.org/25.png"},"species":{"name":"pikachu"},
"is_default":true,"order":35,"moves":[{"move":{"name":"mega-punch"}}]}' >corpus/transform/seed-pikachu
max_len=()
if [ -n "${POKEAPI_SAMPLES:-}" ] && [ -d "$POKEAPI_SAMPLES/pokemon" ]; then
  for file in "$POKEAPI_SAMPLES"/pokemon/*.json; do
    cp "$file" "corpus/transform/sample-$(basename "$file")"
  done
  # Real payloads reach 1.3 MB; libFuzzer would otherwise cut longer inputs at 4 KB + growth.
  max_len=(-max_len=2000000)
fi

failed=()
for target in "${targets[@]}"; do
  echo "== $target: ${seconds}s"
  extra=()
  [ "$target" = transform ] && extra=("${max_len[@]}")
  if ! cargo fuzz run --sanitizer none -O -a "$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}"; then
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz/run.sh: crash in ${failed[*]}; inputs in fuzz/artifacts/" >&2
  exit 1
fi
echo "fuzz/run.sh: no crash in ${targets[*]} (${seconds}s each)"
