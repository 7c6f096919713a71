#!/usr/bin/env bash
# `make down`: stop what `make run` and `make test` left running on this machine, by the pids their scripts
# recorded (never by name): the `make run` stack of this clone, the Prefect server, the single-node Slurm.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

alive() { [ -r "/proc/$1/stat" ] && ! awk '{exit ($3 == "Z") ? 0 : 1}' "/proc/$1/stat"; }

# The make run script first: its own cleanup stops what it started, in order.
if [ -s var/run.lock ]; then
  run_pid=$(cat var/run.lock)
  if [[ $run_pid =~ ^[0-9]+$ ]] && alive "$run_pid" && grep -qa run_stack.sh "/proc/$run_pid/cmdline"; then
    echo "down: stopping make run (pid $run_pid)"
    kill -TERM "$run_pid" 2>/dev/null || true
    for _ in $(seq 1 60); do alive "$run_pid" || break; sleep 0.5; done
  fi
fi
# Whatever it started that is still there (it was killed -9, say): each was started in its own session.
if [ -f var/run.pids ]; then
  while read -r pid; do
    if ! [[ $pid =~ ^[0-9]+$ ]] || ! alive "$pid"; then continue; fi
    echo "down: stopping process group $pid"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done <var/run.pids
  rm -f var/run.pids
fi
scripts/prefect_server.sh down
scripts/slurm.sh down
