# Sourced by peers.sh and soak.sh: `make_work_dir NAME` makes $WORK (/tmp/watchtower-NAME.*)
# and arranges that on exit (Ctrl-C included) the driver in $DRIVER_PID and every process group
# listed in $WORK/pids are stopped, TERM first, and $WORK is removed (kept with KEEP_WORK=1).
# Needs `say` and `die` from the sourcing script.

make_work_dir() {
    WORK="$(mktemp -d "/tmp/watchtower-$1.XXXXXX")" || die "mktemp failed"
    export WORK
    DRIVER_PID=""
    trap cleanup_work_dir EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}

cleanup_work_dir() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n "$DRIVER_PID" ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
        kill -TERM "$DRIVER_PID" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$DRIVER_PID" 2>/dev/null
    fi
    # Every process the driver started leads its own process group; its pid is in $WORK/pids.
    if [[ -f "$WORK/pids" ]]; then
        while read -r pid; do
            [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 -- "-$pid" 2>/dev/null && kill -TERM -- "-$pid" 2>/dev/null
        done < "$WORK/pids"
        sleep 0.3
        while read -r pid; do
            [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 -- "-$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
        done < "$WORK/pids"
    fi
    if [[ "${KEEP_WORK:-0}" == 1 ]]; then
        say "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
