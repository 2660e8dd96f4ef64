#!/usr/bin/env bash
# tests/repeat.sh N [--busy K]: the whole suite (./gantry test) N times in a row, optionally
# with K busy CPU loops beside it, to find races. Prints each run's result, time and failed
# tests. Never reruns a failed test: a race must show, not hide.
set -uo pipefail
cd "$(dirname "$0")/.."
usage() { echo "usage: tests/repeat.sh N [--busy K]" >&2; exit 2; }
[[ ${1:-} =~ ^[1-9][0-9]*$ ]] || usage
runs=$1; shift
busy=0
while [ $# -gt 0 ]; do
    case $1 in
        --busy) [[ ${2:-} =~ ^[0-9]+$ ]] || usage; busy=$2; shift 2 ;;
        *) usage ;;
    esac
done

pids=()
stop_busy() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; }
trap stop_busy EXIT
for ((i = 0; i < busy; i++)); do
    (while :; do :; done) &
    pids+=("$!")
done

logs=$(mktemp -d /tmp/gantry-repeat.XXXXXX)
green=0
for ((run = 1; run <= runs; run++)); do
    start=$(date +%s)
    ./gantry test >"$logs/run$run.log" 2>&1
    status=$?
    took=$(($(date +%s) - start))
    summary=$(grep -E '^=+ .*(passed|failed|error).* in ' "$logs/run$run.log" | tail -1 | tr -d '=')
    if [ "$status" = 0 ]; then
        green=$((green + 1))
        printf 'run %d: green  %4ds %s\n' "$run" "$took" "$summary"
    else
        printf 'run %d: RED (exit %d) %4ds %s\n' "$run" "$status" "$took" "$summary"
        sed -n -E 's/^(FAILED|ERROR) /    \1 /p' "$logs/run$run.log"
    fi
done
echo "$green of $runs runs green (busy loops beside them: $busy); logs in $logs"
[ "$green" = "$runs" ]
