#!/usr/bin/env bash
# Container entrypoint: `python -m "$@"`, e.g.  jdbw_jax.main --config=... --workdir=gs://...
#
# It differs from a bare `python -m` in one way: on SIGTERM (Spot preemption, VM
# maintenance, `docker stop`) it forwards the signal, lets the run save its checkpoint and
# exit, and then exits 143 instead of the run's clean 0. A scheduler (Cloud Batch, Vertex
# AI) therefore sees an interrupted task it should retry, not a finished one; the retry
# resumes from the checkpoint in the same workdir.
set -uo pipefail

child=""
terminated=0
# shellcheck disable=SC2317  # invoked by the traps below
forward() {
  terminated=1
  [[ -n $child ]] && kill -s "$1" "$child" 2>/dev/null
}
trap 'forward TERM' TERM
trap 'forward TERM' INT  # background jobs ignore SIGINT; TERM is what the run handles

python -m "$@" &
child=$!
# `wait` returns early when a trapped signal arrives; wait again until python has exited.
wait "$child"
while kill -0 "$child" 2>/dev/null; do wait "$child"; done
wait "$child"  # the saved exit status of the finished process
status=$?

if ((terminated && status == 0)); then
  echo "entrypoint: stopped by a signal after checkpointing; exiting 143 so the task is retried" >&2
  status=143
fi
exit "$status"
