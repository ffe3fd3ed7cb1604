#!/usr/bin/env bash
# Prepares the one-call GPU report (benchmarks/gpu_report.py) here, so device time goes
# to the GPU alone. Only the checkout travels to the device, not ../shared, so this
# copies the authors' code (../shared/anchor/balagan_torch) into .anchor/, fills .whl/
# with the wheels the device lacks (tools/device_wheels.sh; needs PyPI here), checks
# that both are git-ignored (else they would travel twice or be committed) and that
# the tree fits the device's 64 MiB, and prints the device call.
#
# Usage: tools/prepare_gpu_run.sh          Env: ANCHOR  the anchor folder to copy
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ANCHOR="${ANCHOR:-$REPO_ROOT/../shared/anchor/balagan_torch}"
die() { echo "prepare_gpu_run: ERROR: $*" >&2; exit 1; }

cd "$REPO_ROOT"
[[ -f "$ANCHOR/time_anchor.py" ]] || die "no time_anchor.py in $ANCHOR"
for path in .anchor .whl; do
  git check-ignore -q "$path/" || die "$path/ is not git-ignored; add it to .gitignore"
done
rm -rf .anchor
mkdir -p .anchor
cp -r "$ANCHOR" .anchor/balagan_torch
find .anchor -name __pycache__ -type d -prune -exec rm -rf {} +
echo "prepare_gpu_run: copied $ANCHOR to .anchor/balagan_torch"

tools/device_wheels.sh "$REPO_ROOT/.whl"

# What travels: tracked and untracked-not-ignored files, plus the carried folders.
tree_kib=$(git ls-files -z --cached --others --exclude-standard \
  | xargs -0 -r du -ck 2>/dev/null | tail -n 1 | cut -f 1)
carry_kib=$(du -sk .whl .anchor | awk '{s += $1} END {print s}')
total_mib=$(( (tree_kib + carry_kib) / 1024 ))
echo "prepare_gpu_run: ${total_mib} MiB travel (tree $((tree_kib / 1024)), .whl + .anchor $((carry_kib / 1024)))"
(( total_mib < 64 )) || die "over the device's 64 MiB"

cat <<'EOF'
prepare_gpu_run: ready. The device call (run tool), about 9.5 minutes of device time
plus the machine's start:
  command:   python3 benchmarks/gpu_report.py --wheels=.whl --anchor=.anchor/balagan_torch --output=$OUT/gpu_report.json
  carry:     [".whl", ".anchor"]
  timeout_s: 570
It writes $OUT/gpu_report.json (the table, figures and output tails) and
$OUT/gpu_report.log (every part's whole output).
EOF
