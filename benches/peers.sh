#!/usr/bin/env bash
# Watchtower side by side with nginx, HAProxy, tinyproxy, Squid, Privoxy and mitmproxy.
#
#   bash benches/peers.sh                      # full run: 3 runs x 10 s per scenario (~20 min)
#   DURATION=3 bash benches/peers.sh           # quick run
#   ONLY=watchtower,nginx bash benches/peers.sh
#
# Builds Watchtower (cargo build --release), installs the missing peers and tools with apt-get
# (as root), compiles the load generator benches/tools/wtbench.rs with rustc -O, then hands over
# to benches/tools/run.py, which generates every config into a temp dir, starts everything on
# 127.0.0.1 (free ports picked at run time), measures, and writes benches/results/latest.{md,json}
# and benches/results/ratios.svg. Everything it starts is stopped on exit. See benches/README.md.
#
# Environment: DURATION (s per run, default 10), RUNS (default 3), ONLY (comma list of
# watchtower,nginx,haproxy,tinyproxy,squid,privoxy,mitmproxy; direct always runs), SCENARIOS
# (comma list of scenario ids), CONC (connections/threads, default 50), STARTUP_RUNS (10),
# IDLE_TUNNELS (1000), SKIP_INSTALL=1, SKIP_BUILD=1, KEEP_WORK=1 (keep the temp dir and its logs),
# MITM_RSA=1 (let mitmproxy use its default RSA CA instead of an ECDSA P-256 one).

set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
cd "$REPO" || exit 1

export DURATION="${DURATION:-10}"
export RUNS="${RUNS:-3}"
export ONLY="${ONLY:-}"
export SCENARIOS="${SCENARIOS:-}"
export CONC="${CONC:-50}"
export STARTUP_RUNS="${STARTUP_RUNS:-10}"
export IDLE_TUNNELS="${IDLE_TUNNELS:-1000}"
export RESULTS="${RESULTS:-$HERE/results}"

say() { printf '%s\n' "$*"; }
die() { say "peers.sh: $*" >&2; exit 1; }

# shellcheck source=tools/workdir.sh
source "$HERE/tools/workdir.sh"
make_work_dir peers
chmod 755 "$WORK"

wanted() { [[ -z "$ONLY" ]] || [[ ",${ONLY// /}," == *",$1,"* ]] || { [[ "$1" == mitmproxy ]] && [[ ",$ONLY," == *",mitmdump,"* ]]; }; }

say "== Watchtower side-by-side benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
say "   DURATION=${DURATION}s RUNS=$RUNS CONC=$CONC${ONLY:+ ONLY=$ONLY}${SCENARIOS:+ SCENARIOS=$SCENARIOS}; work dir $WORK"
NPROC="$(nproc)"
[[ "$NPROC" -ge 2 ]] || die "needs at least 2 cores (proxy on core 0, load on core 1); this machine has $NPROC"
read -r LOAD1 _ < /proc/loadavg
say "   $NPROC cores; load average $LOAD1$(awk -v l="$LOAD1" 'BEGIN{ if (l > 0.5) print " -- the machine is not quiet: figures will be noisy" }')"

# ---------------------------------------------------------------------------------------------
# tools and peers from Debian

declare -A SKIP=()
need=()
pkg_for_cmd=(
    "nginx:nginx-light" "wrk:wrk" "openssl:openssl" "taskset:util-linux" "strip:binutils"
)
for pc in "${pkg_for_cmd[@]}"; do
    command -v "${pc%%:*}" >/dev/null 2>&1 || need+=("${pc#*:}")
done
[[ -e /usr/include/openssl/ssl.h ]] || need+=(libssl-dev)   # wtbench links libssl/libcrypto
peer_cmd=( "haproxy:haproxy:haproxy" "tinyproxy:tinyproxy:tinyproxy" "squid:squid:squid"
           "privoxy:privoxy:privoxy" "mitmproxy:mitmdump:mitmproxy" )
for entry in "${peer_cmd[@]}"; do
    IFS=: read -r name cmd pkg <<< "$entry"
    wanted "$name" || continue
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done

if [[ ${#need[@]} -gt 0 ]]; then
    if [[ "${SKIP_INSTALL:-0}" == 1 ]]; then
        say "== not installing (SKIP_INSTALL=1): ${need[*]}"
    elif [[ "$(id -u)" != 0 ]]; then
        say "== not root: cannot apt-get install ${need[*]}"
    else
        say "== apt-get install ${need[*]}"
        made_policy=0
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            # keep the packages' own services (squid on 3128, tinyproxy on 8888...) from starting
            printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
        fi
        export DEBIAN_FRONTEND=noninteractive
        timeout 600 apt-get update -qq >> "$WORK/apt.log" 2>&1 || say "   apt-get update failed (see below); trying the installs anyway"
        for pkg in "${need[@]}"; do
            if ! timeout 900 apt-get install -y -q --no-install-recommends "$pkg" >> "$WORK/apt.log" 2>&1; then
                if [[ "$pkg" == nginx-light ]] && timeout 900 apt-get install -y -q --no-install-recommends nginx >> "$WORK/apt.log" 2>&1; then
                    continue
                fi
                say "   apt-get install $pkg failed: $(tail -n 2 "$WORK/apt.log" | tr '\n' ' ')"
            fi
        done
        [[ $made_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d
    fi
fi
for entry in "${peer_cmd[@]}"; do
    IFS=: read -r name cmd pkg <<< "$entry"
    wanted "$name" || continue
    command -v "$cmd" >/dev/null 2>&1 || SKIP[$name]="\`$cmd\` not available (Debian package $pkg could not be installed)"
done
command -v nginx >/dev/null 2>&1 || die "nginx is needed for the backend and could not be installed"
command -v wrk >/dev/null 2>&1 || die "wrk is needed and could not be installed"
command -v openssl >/dev/null 2>&1 || die "openssl is needed and could not be installed"
command -v taskset >/dev/null 2>&1 || die "taskset (util-linux) is needed"
command -v python3 >/dev/null 2>&1 || die "python3 is needed"

# ---------------------------------------------------------------------------------------------
# build

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
export WT_BIN="$TARGET_DIR/release/watchtower"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    say "== cargo build --release"
    timeout 1800 cargo build --release --quiet --bin watchtower || die "cargo build --release failed"
fi
[[ -x "$WT_BIN" ]] || die "no Watchtower binary at $WT_BIN"
export WTBENCH="$WORK/wtbench"
say "== rustc -O benches/tools/wtbench.rs"
timeout 600 rustc -O --edition 2021 -o "$WTBENCH" "$HERE/tools/wtbench.rs" \
    || die "building the load generator failed (it needs libssl-dev)"

# enough file descriptors for 1000 idle tunnels on every side
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# peers that could not be installed, as JSON for run.py
SKIPPED_JSON="{"
sep=""
for k in "${!SKIP[@]}"; do
    SKIPPED_JSON+="$sep\"$k\": \"${SKIP[$k]//\"/\\\"}\""
    sep=", "
done
export SKIPPED_JSON="$SKIPPED_JSON}"
export REPO

python3 "$HERE/tools/run.py" &
DRIVER_PID=$!
wait "$DRIVER_PID"
rc=$?
DRIVER_PID=""
exit "$rc"
