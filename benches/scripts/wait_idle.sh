#!/usr/bin/env bash
# Wait (up to MAX_WAIT seconds, default 600) until the machine's CPUs have been at least
# IDLE_PCT percent idle (default 90) over a 5-second window, then exec the given command.
# Other builds share this 2-core machine; a timing benchmark started while they run measures
# them as much as the code. Prints the idle share it saw, and the load, before starting.
# With REQUIRE_IDLE=1 it exits 1 instead of running the command when it gives up.
# Usage: benches/scripts/wait_idle.sh cargo bench --bench chunking
set -euo pipefail
IDLE_PCT=${IDLE_PCT:-90}
MAX_WAIT=${MAX_WAIT:-600}
snap() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6}' /proc/stat; }
start=$SECONDS
while :; do
  read -r t0 i0 < <(snap); sleep 5; read -r t1 i1 < <(snap)
  idle=$(( 100 * (i1 - i0) / (t1 - t0 > 0 ? t1 - t0 : 1) ))
  if (( idle >= IDLE_PCT )); then
    echo "wait_idle: ${idle}% idle over 5 s after $((SECONDS - start)) s; $(uptime)" >&2
    break
  fi
  if (( SECONDS - start >= MAX_WAIT )); then
    if [[ ${REQUIRE_IDLE:-0} == 1 ]]; then
      echo "wait_idle: gave up after ${MAX_WAIT} s (last 5 s: ${idle}% idle); not running; $(uptime)" >&2
      exit 1
    fi
    echo "wait_idle: gave up after ${MAX_WAIT} s (last 5 s: ${idle}% idle); running anyway; $(uptime)" >&2
    break
  fi
done
exec "$@"
