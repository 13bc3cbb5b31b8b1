#!/usr/bin/env bash
# The fuzzing campaign FUZZING.md reports: each target in turn for SECONDS (default 900),
# then its corpus minimised in place. Statistics go to fuzz/campaign/<target>.log.
#
#   bash fuzz/campaign.sh                      # every target, 15 minutes each
#   SECONDS_EACH=60 bash fuzz/campaign.sh chunked config
#   CPU=1 bash fuzz/campaign.sh                # pinned to one core
#
# Needs cargo-fuzz and a nightly toolchain (`cargo install cargo-fuzz`,
# `rustup toolchain install nightly`). Runs without sanitizers (`--sanitizer none`), which
# is what a 2-core machine affords; the targets check their own invariants.
set -euo pipefail
cd "$(dirname "$0")/.."
each=${SECONDS_EACH:-900}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
pin=()
if [ -n "${CPU:-}" ]; then pin=(taskset -c "$CPU"); fi
mkdir -p fuzz/campaign
for t in "${targets[@]}"; do
    log=fuzz/campaign/$t.log
    echo "== $t: ${each}s" | tee "$log"
    start=$(date +%s)
    "${pin[@]}" cargo +nightly fuzz run "$t" --sanitizer none -O -- \
        -max_total_time="$each" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        >>"$log" 2>&1 || { echo "!! $t stopped with a finding, see $log and fuzz/artifacts/$t"; }
    echo "elapsed $(( $(date +%s) - start ))s" >>"$log"
    grep -E '^#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|stat::peak_rss|cov:' "$log" | tail -3
    "${pin[@]}" cargo +nightly fuzz cmin "$t" --sanitizer none -O >>"$log" 2>&1
    # cmin keeps what adds coverage; the committed seeds and named reproducers stay too.
    git checkout -- "fuzz/corpus/$t" 2>/dev/null || true
    echo "corpus after cmin: $(ls fuzz/corpus/$t | wc -l) files" | tee -a "$log"
done
