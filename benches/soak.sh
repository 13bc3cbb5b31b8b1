#!/usr/bin/env bash
# Watchtower soak test (issue 8): a bounded run on loopback mixing forward HTTP, reverse HTTP,
# CONNECT tunnels, intercepted HTTPS and WebSockets at a steady rate while routes and the
# local-routing switch are changed through the admin API. PASS needs zero failed operations and
# RSS and open file descriptors flat from minute 2 to the end. See benches/README.md.
#
#   bash benches/soak.sh                       # 10 minutes at 200 operations/s
#   SOAK_MINUTES=1 bash benches/soak.sh        # a short check
#
# Environment: SOAK_MINUTES (10), RATE (200 operations/s, all kinds together), WT_BIN (default
# target/release/watchtower, built with cargo build --release when missing), OUT (results path
# without extension; default benches/results/soak-<UTC date>, written as .md and .json),
# SOAK_THREADS (32 client threads), TOGGLE_EVERY (2 s between admin changes), TOGGLE_BURST (3:
# every fifth change is a burst of that many back to back; 1 = no bursts), SAMPLE_EVERY
# (seconds between printed samples), SOAK_IDLE (Watchtower's [timeouts] idle, 10 s),
# WT_WORKERS ([proxy] workers; unset = one per core), SOAK_SEED, KEEP_WORK=1 (keep the temp dir
# with the config, the API log and Watchtower's stderr).
#
# Python 3 standard library only. Everything runs on 127.0.0.1; every process started is
# stopped on exit (each leads its own process group, listed in $WORK/pids).

set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
cd "$REPO" || exit 1

say() { printf '%s\n' "$*"; }
die() { say "soak.sh: $*" >&2; exit 2; }

export SOAK_MINUTES="${SOAK_MINUTES:-10}"
export RATE="${RATE:-200}"
TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
DEFAULT_BIN="$TARGET_DIR/release/watchtower"
export WT_BIN="${WT_BIN:-$DEFAULT_BIN}"
export OUT="${OUT:-$HERE/results/soak-$(date -u +%Y%m%d-%H%M%S)}"

command -v python3 >/dev/null 2>&1 || die "python3 is needed"
if [[ ! -x "$WT_BIN" ]]; then
    [[ "$WT_BIN" == "$DEFAULT_BIN" ]] || die "no Watchtower binary at $WT_BIN"
    say "== cargo build --release (no binary at $WT_BIN)"
    timeout 1800 cargo build --release --quiet --bin watchtower || die "cargo build --release failed"
    [[ -x "$WT_BIN" ]] || die "no Watchtower binary at $WT_BIN after the build"
fi

# shellcheck source=tools/workdir.sh
source "$HERE/tools/workdir.sh"
make_work_dir soak

# enough descriptors for the client threads, the backends and Watchtower
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

python3 "$HERE/tools/soak.py" &
DRIVER_PID=$!
wait "$DRIVER_PID"
rc=$?
DRIVER_PID=""
exit "$rc"
