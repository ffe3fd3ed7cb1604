#!/usr/bin/env bash
# Cloud TPU VM launcher for i2i_jax (JD-BW, BalaGAN): create / install / run / logs / stop / delete.
#
# Multi-host data parallelism: on a pod slice (v4-32, v5litepod-16, ...) every worker VM
# runs its own Python process and all of them together form ONE JAX program: each process
# reads its own shard of the data and the global batch is split over all chips of the slice.
# So every command here targets `--worker=all`, and `run` starts the SAME command on all
# workers at once; a worker left out makes the others wait forever in the first collective.
# On a single-host slice (v4-8, v5litepod-8) "all" is just worker 0.
#
# Everything can be set by flag or environment variable (flags win); see `usage` below.
set -euo pipefail

NAME=${NAME:-i2i-jax}
ZONE=${ZONE:-us-central2-b}              # v4 lives in us-central2-b; v5e e.g. us-west4-a, v6e e.g. us-east5-b
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-}     # empty: chosen from ACCELERATOR_TYPE (see default_runtime)
PROJECT=${PROJECT:-}                     # empty: gcloud's configured project
REPO_URL=${REPO_URL:-}                   # empty: `install` copies this checkout instead of cloning
REPO_REF=${REPO_REF:-}                   # branch or tag for REPO_URL (default: the remote's default branch)
REMOTE_DIR=${REMOTE_DIR:-i2i_jax}        # on each worker, relative to $HOME
LOG_DIR=${LOG_DIR:-i2i_jax_logs}         # on each worker, relative to $HOME: run.log, run.pid
STOP_TIMEOUT=${STOP_TIMEOUT:-300}        # seconds `stop` waits for the checkpoint + exit
WORKER=${WORKER:-}                       # logs/ssh: default 0; stop/install/run: always all
PROVISIONING=()
FORCE=0
FOLLOW=0
RUN_ENV=()

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh [options] COMMAND [args]

Commands:
  create [-- GCLOUD_FLAGS]   create the TPU VM / pod slice (extra flags go to `tpu-vm create`)
  install                    copy this checkout (or clone REPO_URL) to every worker and
                             pip install "jax[tpu]" + the package there
  run MODULE [FLAGS...]      start `python3 -m MODULE FLAGS...` on ALL workers in the background
                             (nohup, log in ~/i2i_jax_logs/run.log); MODULE "jdbw_jax" means
                             "jdbw_jax.main"; FLAGS are passed through unchanged
  logs [-f]                  tail the run log of one worker (--worker, default 0)
  status                     TPU state and whether the run is alive on each worker
  stop [--force]             SIGTERM the run on all workers (it checkpoints and exits);
                             --force sends SIGKILL (resume from the last periodic checkpoint)
  ssh [COMMAND]              ssh into a worker (--worker, default 0) or run COMMAND there
  delete                     delete the TPU VM (the gs:// workdir is kept)

Options (or environment variables):
  --name NAME                 NAME              (default i2i-jax)
  --zone ZONE                 ZONE              (default us-central2-b)
  --project PROJECT           PROJECT           (default: gcloud config get-value project)
  --accelerator-type TYPE     ACCELERATOR_TYPE  (default v4-8; e.g. v4-32, v5litepod-8, v6e-8)
  --version RUNTIME           RUNTIME_VERSION   (default tpu-ubuntu2204-base for v2-v5p,
                                                 v2-alpha-tpuv5-lite for v5e, v2-alpha-tpuv6e for v6e)
  --spot | --preemptible      create a Spot / preemptible TPU (it can be reclaimed any time)
  --repo-url URL              REPO_URL          install: git clone URL (REPO_REF: branch/tag)
  --worker N                  WORKER            logs/ssh: which worker (default 0; "all" allowed)
  --env KEY=VALUE             run: extra environment variable (repeatable)

Example (pod slice, Spot):
  export PROJECT=my-proj ZONE=us-central2-b NAME=jdbw-v4-32 ACCELERATOR_TYPE=v4-32
  launch/tpu_vm.sh create --spot
  launch/tpu_vm.sh install
  launch/tpu_vm.sh run jdbw_jax.main --config=configs/mnist_svhn.py \
      --workdir=gs://my-bucket/runs/mnist_svhn \
      --config.data.source.data_dir=gs://my-bucket/tfds --config.data.target.data_dir=gs://my-bucket/tfds
  launch/tpu_vm.sh logs -f
EOF
}

die() { echo "tpu_vm.sh: $*" >&2; exit 1; }

default_runtime() {
  case $ACCELERATOR_TYPE in
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo tpu-ubuntu2204-base ;;  # v2, v3, v4, v5p
  esac
}

# gcloud compute tpus tpu-vm SUBCOMMAND ... with the zone and project of this TPU.
tpu() {
  local sub=$1
  shift
  gcloud compute tpus tpu-vm "$sub" "$@" --zone="$ZONE" --project="$PROJECT"
}

# remote WORKER BODY [ARGS...]: runs the bash snippet BODY on WORKER with $1.. = ARGS
# and $DIR / $LOGS set; every value is %q-quoted, so spaces and quotes survive ssh.
remote() {
  local worker=$1 body=$2 cmd
  shift 2
  cmd=$(printf 'set -euo pipefail; DIR=%q; LOGS=%q; set --' "$REMOTE_DIR" "$LOG_DIR")
  (($#)) && cmd+=$(printf ' %q' "$@")
  tpu ssh "$NAME" --worker="$worker" --command="$cmd; $body"
}

cmd_create() {
  local runtime=${RUNTIME_VERSION:-$(default_runtime)}
  echo "Creating $NAME: $ACCELERATOR_TYPE, runtime $runtime, zone $ZONE, project $PROJECT" \
       "${PROVISIONING[*]:-(on-demand)}"
  tpu create "$NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$runtime" \
      ${PROVISIONING[@]+"${PROVISIONING[@]}"} "$@"
}

cmd_install() {
  if [[ -n $REPO_URL ]]; then
    echo "Cloning $REPO_URL${REPO_REF:+ ($REPO_REF)} on all workers of $NAME"
    # shellcheck disable=SC2016  # $DIR etc. expand on the worker
    remote all '
      if [[ -d $DIR/.git ]]; then git -C "$DIR" fetch -q --depth 1 origin "${2:-HEAD}" && git -C "$DIR" checkout -q --detach FETCH_HEAD
      elif [[ -e $DIR ]]; then echo "$(hostname): ~/$DIR exists and is no git checkout" >&2; exit 1
      else git clone -q --depth 1 ${2:+--branch "$2"} "$1" "$DIR"; fi' "$REPO_URL" "$REPO_REF"
  else
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    tarball=$(mktemp "${TMPDIR:-/tmp}/i2i_jax_src.XXXXXX")
    trap 'rm -f "$tarball"' EXIT
    # The files git knows (tracked + untracked, minus .gitignore: no .venv, no workdirs).
    (cd "$root" && git ls-files -z --cached --others --exclude-standard \
       | while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done \
       | tar --null -T - -czf "$tarball")
    echo "Copying $root ($(du -h "$tarball" | cut -f1)) to all workers of $NAME"
    tpu scp "$tarball" "$NAME:i2i_jax_src.tgz" --worker=all
    # Unpack into a fresh directory so files deleted locally disappear there too.
    # shellcheck disable=SC2016
    remote all 'rm -rf "$DIR.new" && mkdir "$DIR.new" && tar -xzf ~/i2i_jax_src.tgz -C "$DIR.new" \
                && rm -rf "$DIR" && mv "$DIR.new" "$DIR" && rm ~/i2i_jax_src.tgz'
  fi
  echo "Installing jax[tpu] and the package on all workers"
  # One pip call, so jax, jaxlib and libtpu are resolved together with the package's pins.
  # gcsfs / google-cloud-storage: gs:// support for etils/orbax/tfds and tensorboardX.
  # shellcheck disable=SC2016
  remote all 'cd "$DIR" && python3 -m pip install -q -U pip \
              && python3 -m pip install -q -U "jax[tpu]" gcsfs google-cloud-storage -e . \
              && echo "$(hostname): jax $(python3 -c "import jax; print(jax.__version__)")"'
}

cmd_run() {
  (($#)) || die "run: give the module, e.g. run jdbw_jax.main --config=... --workdir=gs://..."
  local module=$1 arg
  shift
  [[ $module == -* ]] && die "run: the module comes first, e.g. run jdbw_jax.main $module ..."
  [[ $module == *.* ]] || module+=.main
  [[ " $* " == *" --workdir=gs://"* ]] || echo "tpu_vm.sh: warning: --workdir is not gs://..." \
    "checkpoints stay on the VM's disk, pod slices need one shared gs:// workdir" >&2
  local -a cmd=(env PYTHONUNBUFFERED=1)
  for arg in ${RUN_ENV[@]+"${RUN_ENV[@]}"}; do
    [[ $arg == [A-Za-z_]*=* ]] || die "--env wants KEY=VALUE, got '$arg'"
    cmd+=("$arg")
  done
  cmd+=(python3 -m "$module" "$@")
  # On each worker: refuse a second run, then start the command detached (nohup + setsid,
  # stdin/out/err redirected) so it outlives the ssh session; $! is python's pid.
  #
  # jax.distributed: i2i_jax.training.runtime.initialize() joins a multi-host job when it sees
  # JAX_COORDINATOR_ADDRESS (among others). TPU VMs keep the slice layout in the GCE
  # metadata server rather than in the ssh environment, so on a pod slice this sets it to
  # worker 0 of `worker-network-endpoints`, port 8476, exactly as jax itself would (process
  # ids and count are still read from the metadata). Orbax needs the distributed client to
  # synchronise multi-host checkpoints.
  # shellcheck disable=SC2016
  remote all '
    mkdir -p "$HOME/$LOGS"; pidfile=$HOME/$LOGS/run.pid; log=$HOME/$LOGS/run.log
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$(hostname): a run is going already (pid $(cat "$pidfile")); stop it first" >&2; exit 1
    fi
    if [[ -z ${JAX_COORDINATOR_ADDRESS:-} ]]; then
      eps=$(curl -sf -H Metadata-Flavor:Google \
        http://metadata.google.internal/computeMetadata/v1/instance/attributes/worker-network-endpoints || true)
      if [[ $eps == *,* ]]; then first=${eps%%,*}; export JAX_COORDINATOR_ADDRESS=${first##*:}:8476; fi
    fi
    cd "$DIR"
    echo "=== $(date -u +%FT%TZ) $*" >> "$log"
    nohup setsid "$@" >> "$log" 2>&1 < /dev/null &
    echo $! > "$pidfile"
    echo "$(hostname): started pid $! (log: ~/$LOGS/run.log)"' "${cmd[@]}"
}

cmd_logs() {
  # shellcheck disable=SC2016
  remote "${WORKER:-0}" 'tail -n 200 ${1:+-F} "$HOME/$LOGS/run.log"' "$( ((FOLLOW)) && echo 1)"
}

cmd_status() {
  tpu describe "$NAME" \
    --format='table(name.basename(), state, acceleratorType, runtimeVersion, schedulingConfig)'
  # shellcheck disable=SC2016
  remote all 'pidfile=$HOME/$LOGS/run.pid
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$(hostname): running (pid $(cat "$pidfile"))"; else echo "$(hostname): no run"; fi
    tail -n 1 "$HOME/$LOGS/run.log" 2>/dev/null || true'
}

cmd_stop() {
  # SIGTERM: the training loop saves a checkpoint and exits, so `run` with the same
  # workdir resumes exactly there. On a pod slice the workers must agree on that step; if
  # a worker hangs instead of exiting, use --force (resume from the last periodic checkpoint).
  local sig=TERM
  ((FORCE)) && sig=KILL
  # shellcheck disable=SC2016
  remote all 'pidfile=$HOME/$LOGS/run.pid
    if [[ ! -f $pidfile ]] || ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "$(hostname): no run going"; exit 0; fi
    pid=$(cat "$pidfile"); kill -s "$1" "$pid"
    for ((i = 0; i < $2; i++)); do
      if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$pidfile"
        [[ $1 == KILL ]] && rm -f /tmp/libtpu_lockfile  # left behind by a killed process
        echo "$(hostname): stopped"; exit 0
      fi
      sleep 1
    done
    echo "$(hostname): pid $pid still running after $2 s (try: stop --force)" >&2; exit 1' \
    "$sig" "$STOP_TIMEOUT"
}

cmd_ssh() {
  if (($#)); then
    tpu ssh "$NAME" --worker="${WORKER:-0}" --command="$*"
  else
    tpu ssh "$NAME" --worker="${WORKER:-0}"
  fi
}

cmd_delete() {
  tpu delete "$NAME" "$@"
}

main() {
  local sub=""
  local -a args=()
  while (($#)); do
    case $1 in
      -h|--help) usage; exit 0 ;;
      --name|--zone|--project|--accelerator-type|--version|--worker|--env|--repo-url)
        (($# >= 2)) || die "$1 needs a value"
        set -- "$1=$2" "${@:3}"
        continue ;;
      --name=*) NAME=${1#*=} ;;
      --zone=*) ZONE=${1#*=} ;;
      --project=*) PROJECT=${1#*=} ;;
      --accelerator-type=*) ACCELERATOR_TYPE=${1#*=} ;;
      --version=*) RUNTIME_VERSION=${1#*=} ;;
      --worker=*) WORKER=${1#*=} ;;
      --env=*) RUN_ENV+=("${1#*=}") ;;
      --repo-url=*) REPO_URL=${1#*=} ;;
      --spot|--preemptible) PROVISIONING=("$1") ;;
      --force) FORCE=1 ;;
      -f|--follow) FOLLOW=1 ;;
      --) shift; args+=("$@"); break ;;
      -*) die "unknown option $1 (see --help)" ;;
      *)
        if [[ -z $sub ]]; then sub=$1
        else args+=("$@"); break  # the first argument after the command ends our options
        fi ;;
    esac
    shift
  done
  [[ -n $sub ]] || { usage >&2; exit 2; }
  command -v gcloud >/dev/null || die "gcloud not found (https://cloud.google.com/sdk/docs/install)"
  [[ -n $PROJECT ]] || PROJECT=$(gcloud config get-value project 2>/dev/null || true)
  [[ -n $PROJECT ]] || die "set PROJECT (or --project, or gcloud config set project ...)"
  [[ $REMOTE_DIR =~ ^[A-Za-z0-9_][A-Za-z0-9._-]*$ && $REMOTE_DIR != *..* ]] \
    || die "REMOTE_DIR must be a plain directory name under \$HOME, got '$REMOTE_DIR'"
  case $sub in
    create) cmd_create ${args[@]+"${args[@]}"} ;;
    install|status|stop|logs)
      ((${#args[@]} == 0)) || die "$sub takes no arguments, got: ${args[*]}"
      "cmd_$sub" ;;
    run) cmd_run ${args[@]+"${args[@]}"} ;;
    ssh) cmd_ssh ${args[@]+"${args[@]}"} ;;
    delete) cmd_delete ${args[@]+"${args[@]}"} ;;
    *) die "unknown command '$sub' (see --help)" ;;
  esac
}

main "$@"
