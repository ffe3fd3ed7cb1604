#!/usr/bin/env bash
# Runs a training job on Vertex AI (one GPU machine):
#   1. builds launch/Dockerfile and pushes it to Artifact Registry (Cloud Build by default),
#   2. renders launch/vertex_job.yaml with the settings below,
#   3. gcloud ai custom-jobs create.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/vertex_submit.sh MODULE --config=CONFIG --workdir=gs://BUCKET/PATH [FLAGS...]

  MODULE and FLAGS are those of a local run (`python -m MODULE FLAGS...`), e.g.
    PROJECT=my-proj launch/vertex_submit.sh jdbw_jax.main --config=configs/mnist_svhn.py \
        --workdir=gs://my-bucket/runs/mnist_svhn \
        --config.data.source.data_dir=gs://my-bucket/tfds \
        --config.data.target.data_dir=gs://my-bucket/tfds

Environment:
  PROJECT            GCP project (default: gcloud's)
  REGION             us-central1
  MACHINE_TYPE       a2-highgpu-1g        ACCELERATOR_TYPE  NVIDIA_TESLA_A100
  ACCELERATOR_COUNT  1                    (H100: a3-highgpu-1g + NVIDIA_H100_80GB)
  STRATEGY           STANDARD | SPOT | FLEX_START   (SPOT: preemptible, the run resumes)
  IMAGE_URI          REGION-docker.pkg.dev/PROJECT/i2i-jax/i2i-jax:<timestamp>
  BUILD              cloudbuild | docker | none (reuse IMAGE_URI)
  JOB_NAME           display name (default i2i-<package>-<timestamp>)
  SERVICE_ACCOUNT    run as this service account (needs access to the buckets)
  DRY_RUN=1          print the rendered job spec and the commands, run nothing
EOF
}

[[ ${1:-} == -h || ${1:-} == --help ]] && { usage; exit 0; }
(($#)) || { usage >&2; exit 2; }
parse_job_args "$@"
resolve_project
REGION=${REGION:-us-central1}
MACHINE_TYPE=${MACHINE_TYPE:-a2-highgpu-1g}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-NVIDIA_TESLA_A100}
ACCELERATOR_COUNT=${ACCELERATOR_COUNT:-1}
STRATEGY=${STRATEGY:-STANDARD}
IMAGE_URI=${IMAGE_URI:-$(default_image)}
JOB_NAME=${JOB_NAME:-i2i-${MODULE%%.*}-$(date +%Y%m%d-%H%M%S)}
[[ $ACCELERATOR_COUNT =~ ^[1-9][0-9]*$ ]] || die "ACCELERATOR_COUNT must be a positive integer"
[[ $STRATEGY =~ ^(STANDARD|SPOT|FLEX_START)$ ]] || die "STRATEGY must be STANDARD, SPOT or FLEX_START"

spec=$(mktemp "${TMPDIR:-/tmp}/vertex_job.XXXXXX")
trap 'rm -f "$spec"' EXIT
render "$LAUNCH_DIR/vertex_job.yaml" yaml IMAGE_URI MODULE CONFIG WORKDIR MACHINE_TYPE \
    ACCELERATOR_TYPE ACCELERATOR_COUNT STRATEGY > "$spec"
[[ -n ${DRY_RUN:-} ]] && cat "$spec"

if [[ -n ${DRY_RUN:-} ]]; then echo "+ build_image (BUILD=${BUILD:-cloudbuild}) -> $IMAGE_URI"; else build_image; fi
run gcloud ai custom-jobs create --project="$PROJECT" --region="$REGION" \
    --display-name="$JOB_NAME" --config="$spec" \
    ${SERVICE_ACCOUNT:+--service-account="$SERVICE_ACCOUNT"}

[[ -z ${DRY_RUN:-} ]] || exit 0
cat <<EOF

Submitted "$JOB_NAME". Follow it with
  gcloud ai custom-jobs list --project=$PROJECT --region=$REGION --filter='displayName=$JOB_NAME'
  gcloud ai custom-jobs stream-logs JOB_ID --project=$PROJECT --region=$REGION
TensorBoard:  tensorboard --logdir $WORKDIR/tensorboard
EOF
