#!/usr/bin/env bash
# Runs a training job on Google Cloud Batch (one GPU VM, container runnable):
#   1. builds launch/Dockerfile and pushes it to Artifact Registry (Cloud Build by default),
#   2. renders launch/cloud_batch_job.json with the settings below (extra flags are
#      appended to the container's "commands" after --workdir),
#   3. gcloud batch jobs submit.
# Preemption: a Spot VM that is reclaimed (exit code 50001), a lost or recreated VM
# (50002, 50003, 50006) or a SIGTERM-ed run (143, see launch/entrypoint.sh) is retried up
# to maxRetryCount times; every retry resumes from the checkpoint in --workdir. Other
# failures (a bad flag, a crash) fail the job at once.
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: launch/batch_submit.sh MODULE --config=CONFIG --workdir=gs://BUCKET/PATH [FLAGS...]

  MODULE and FLAGS are those of a local run (`python -m MODULE FLAGS...`), e.g.
    PROJECT=my-proj PROVISIONING_MODEL=SPOT launch/batch_submit.sh jdbw_jax.main \
        --config=configs/mnist_svhn.py --workdir=gs://my-bucket/runs/mnist_svhn \
        --config.data.source.data_dir=gs://my-bucket/tfds \
        --config.data.target.data_dir=gs://my-bucket/tfds

Environment:
  PROJECT             GCP project (default: gcloud's)
  REGION              us-central1 (the job's location and the VMs' region)
  MACHINE_TYPE        a2-highgpu-1g        ACCELERATOR_TYPE  nvidia-tesla-a100
  ACCELERATOR_COUNT   1                    (H100: a3-highgpu-1g + nvidia-h100-80gb;
                                            L4: g2-standard-8 + nvidia-l4)
  PROVISIONING_MODEL  STANDARD | SPOT
  IMAGE_URI           REGION-docker.pkg.dev/PROJECT/i2i-jax/i2i-jax:<timestamp>
  BUILD               cloudbuild | docker | none (reuse IMAGE_URI)
  JOB_NAME            job id (default i2i-<package>-<timestamp>; [a-z][a-z0-9-]*, <= 63)
  DRY_RUN=1           print the rendered job and the commands, run nothing
EOF
}

[[ ${1:-} == -h || ${1:-} == --help ]] && { usage; exit 0; }
(($#)) || { usage >&2; exit 2; }
parse_job_args "$@"
resolve_project
REGION=${REGION:-us-central1}
MACHINE_TYPE=${MACHINE_TYPE:-a2-highgpu-1g}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-nvidia-tesla-a100}
ACCELERATOR_COUNT=${ACCELERATOR_COUNT:-1}
PROVISIONING_MODEL=${PROVISIONING_MODEL:-STANDARD}
IMAGE_URI=${IMAGE_URI:-$(default_image)}
package=${MODULE%%.*}
JOB_NAME=${JOB_NAME:-i2i-${package//_/-}-$(date +%Y%m%d-%H%M%S)}
[[ $ACCELERATOR_COUNT =~ ^[1-9][0-9]*$ ]] || die "ACCELERATOR_COUNT must be a positive integer"
[[ $PROVISIONING_MODEL =~ ^(STANDARD|SPOT|PREEMPTIBLE)$ ]] \
  || die "PROVISIONING_MODEL must be STANDARD, SPOT or PREEMPTIBLE"
[[ $JOB_NAME =~ ^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$ ]] \
  || die "JOB_NAME must be lowercase letters, digits and hyphens (<= 63), got '$JOB_NAME'"

spec=$(mktemp "${TMPDIR:-/tmp}/batch_job.XXXXXX")
trap 'rm -f "$spec"' EXIT
render "$LAUNCH_DIR/cloud_batch_job.json" json IMAGE_URI MODULE CONFIG WORKDIR MACHINE_TYPE \
    ACCELERATOR_TYPE ACCELERATOR_COUNT PROVISIONING_MODEL REGION > "$spec"
if command -v python3 >/dev/null; then
  python3 -m json.tool "$spec" >/dev/null || die "the rendered job is not valid JSON"
fi
[[ -n ${DRY_RUN:-} ]] && cat "$spec"

if [[ -n ${DRY_RUN:-} ]]; then echo "+ build_image (BUILD=${BUILD:-cloudbuild}) -> $IMAGE_URI"; else build_image; fi
run gcloud batch jobs submit "$JOB_NAME" --project="$PROJECT" --location="$REGION" \
    --config="$spec"

[[ -z ${DRY_RUN:-} ]] || exit 0
cat <<EOF

Submitted "$JOB_NAME". Follow it with
  gcloud batch jobs describe $JOB_NAME --project=$PROJECT --location=$REGION --format='value(status.state)'
  gcloud logging read "logName=projects/$PROJECT/logs/batch_task_logs AND labels.job_uid=\$(gcloud batch jobs \\
      describe $JOB_NAME --project=$PROJECT --location=$REGION --format='value(uid)')" \\
      --project=$PROJECT --freshness=1d --order=asc --format='value(textPayload)'
TensorBoard:  tensorboard --logdir $WORKDIR/tensorboard
EOF
