# shellcheck shell=bash
# Shared by vertex_submit.sh and batch_submit.sh (sourced): job arguments, image build,
# template rendering.

LAUNCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$LAUNCH_DIR")

die() { echo "${0##*/}: $*" >&2; exit 1; }

resolve_project() {
  [[ -n ${PROJECT:-} ]] || PROJECT=$(gcloud config get-value project 2>/dev/null || true)
  [[ -n $PROJECT ]] || die "set PROJECT (or: gcloud config set project PROJECT)"
}

# parse_job_args MODULE FLAGS...: the container's arguments, as for a local run
# (`python -m MODULE FLAGS...`). Sets MODULE, CONFIG, WORKDIR and EXTRA_ARGS (the other flags).
parse_job_args() {
  (($#)) || die "give the module and its flags, e.g. jdbw_jax.main --config=configs/mnist_svhn.py --workdir=gs://BUCKET/runs/mnist_svhn"
  MODULE=$1
  shift
  [[ $MODULE != -* ]] || die "the module comes first, e.g. jdbw_jax.main $MODULE ..."
  [[ $MODULE == *.* ]] || MODULE+=.main
  CONFIG="" WORKDIR="" EXTRA_ARGS=()
  local arg
  for arg; do
    case $arg in
      --config=*) CONFIG=${arg#*=} ;;
      --workdir=*) WORKDIR=${arg#*=} ;;
      --config|--workdir) die "write $arg=VALUE as one argument" ;;
      *$'\n'*) die "arguments cannot contain newlines" ;;
      *) EXTRA_ARGS+=("$arg") ;;
    esac
  done
  [[ -n $CONFIG ]] || die "--config=configs/<task>.py is required"
  [[ $WORKDIR == gs://?* ]] \
    || die "--workdir=gs://BUCKET/PATH is required: the job's disk is gone when it ends"
}

# The default image: Artifact Registry repository AR_REPO (default i2i-jax) in REGION.
default_image() {
  echo "${REGION}-docker.pkg.dev/${PROJECT}/${AR_REPO:-i2i-jax}/i2i-jax:${IMAGE_TAG:-$(date +%Y%m%d-%H%M%S)}"
}

ensure_artifact_repo() {
  [[ $IMAGE_URI =~ ^([a-z0-9-]+)-docker\.pkg\.dev/([^/]+)/([^/]+)/ ]] || return 0
  local location=${BASH_REMATCH[1]} project=${BASH_REMATCH[2]} repo=${BASH_REMATCH[3]}
  gcloud artifacts repositories describe "$repo" --location="$location" --project="$project" \
      >/dev/null 2>&1 && return 0
  echo "Creating Artifact Registry repository $repo in $location"
  gcloud artifacts repositories create "$repo" --repository-format=docker \
      --location="$location" --project="$project"
}

# BUILD=cloudbuild (default: no local docker needed) | docker (local build + push; run
# `gcloud auth configure-docker REGION-docker.pkg.dev` once) | none (IMAGE_URI exists).
build_image() {
  case ${BUILD:-cloudbuild} in
    none) echo "Using the existing image $IMAGE_URI" ;;
    cloudbuild)
      ensure_artifact_repo
      echo "Building $IMAGE_URI with Cloud Build"
      gcloud builds submit "$REPO_ROOT" --project="$PROJECT" \
          --config="$LAUNCH_DIR/cloudbuild.yaml" --substitutions="_IMAGE=$IMAGE_URI" ;;
    docker)
      ensure_artifact_repo
      docker build -f "$LAUNCH_DIR/Dockerfile" -t "$IMAGE_URI" "$REPO_ROOT"
      docker push "$IMAGE_URI" ;;
    *) die "BUILD must be cloudbuild, docker or none, not '$BUILD'" ;;
  esac
}

# Escapes a value for a JSON / YAML double-quoted string.
quote_escape() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '%s' "${s//$'\t'/\\t}"
}

# render TEMPLATE STYLE VAR...: prints TEMPLATE with every ${VAR} replaced by the value of
# the shell variable VAR, and EXTRA_ARGS added after the line holding "--workdir=${WORKDIR}"
# (STYLE json: appended to that array line; yaml: one "- item" line each below it).
# Placeholders stand inside double quotes (or are plain integers), so values are escaped.
render() {
  local template=$1 style=$2 var arg extra="" out
  shift 2
  local -a env=()
  for var; do env+=("R_$var=$(quote_escape "${!var}")"); done
  for arg in ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}; do extra+=$(quote_escape "$arg")$'\n'; done
  # shellcheck disable=SC2016  # awk program
  out=$(env "${env[@]}" RENDER_VARS="$*" STYLE="$style" R_EXTRA="${extra%$'\n'}" awk '
    function subst(s,    n, k, key, val, out, i) {
      n = split(ENVIRON["RENDER_VARS"], keys, " ")
      for (k = 1; k <= n; k++) {
        key = "${" keys[k] "}"; val = ENVIRON["R_" keys[k]]; out = ""
        while ((i = index(s, key)) > 0) {
          out = out substr(s, 1, i - 1) val; s = substr(s, i + length(key))
        }
        s = out s
      }
      return s
    }
    BEGIN { nx = ENVIRON["R_EXTRA"] == "" ? 0 : split(ENVIRON["R_EXTRA"], extra, "\n") }
    {
      anchor = index($0, "--workdir=${WORKDIR}") > 0
      line = subst($0)
      if (anchor && ENVIRON["STYLE"] == "json")
        for (k = 1; k <= nx; k++) line = line ", \"" extra[k] "\""
      print line
      if (anchor && ENVIRON["STYLE"] == "yaml") {
        match($0, /^ */); indent = substr($0, 1, RLENGTH)
        for (k = 1; k <= nx; k++) print indent "- \"" extra[k] "\""
      }
    }' "$template")
  if grep -nE '[$][{][A-Za-z_][A-Za-z0-9_]*[}]' <<<"$out" >&2; then
    die "unfilled placeholders in $template (above)"
  fi
  printf '%s\n' "$out"
}

# Runs "$@", or with DRY_RUN=1 only prints it.
run() {
  if [[ -n ${DRY_RUN:-} ]]; then printf '+'; printf ' %q' "$@"; echo; else "$@"; fi
}
