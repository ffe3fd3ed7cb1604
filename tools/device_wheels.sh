#!/usr/bin/env bash
# Fill a folder (default: .whl/ in the repo root; the first argument overrides)
# with the wheels this project needs on the GPU device machine, beyond what that
# machine already has.
#
# The device: x86-64 Linux, CPython 3.12 (3.12.3, as on Ubuntu 24.04, so glibc
# 2.39 is assumed: manylinux_2_N wheels up to N=39 are accepted when no older
# one exists; pip prefers manylinux_2_28 and older), no internet. Its image
# already holds jax/jaxlib (CUDA 13), flax, optax, orbax-checkpoint, numpy,
# pandas, scipy, matplotlib, ... (the DEVICE_HAS list below, from
# /work/.library/device/KINDS.md). What is missing is roughly
# tensorflow-datasets, grain, clu, ml-collections, tensorboardX, mlxtend and
# their dependencies that the device lacks. This script resolves the
# project's [project].dependencies (pyproject.toml) with this machine's pip,
# keeps only the projects reachable from them through projects the device
# lacks, and fetches each at the resolved version as a wheel usable on CPython
# 3.12 manylinux x86-64: pure-python wheels as they are, compiled ones as their
# cp312/abi3 manylinux wheel, and sdist-only projects (e.g. promise) built here
# into pure py3-none-any wheels.
#
# On the device (pass .whl in the device tool's `carry`), before running e.g. a
# benchmark:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
#       --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PYTHONPATH
#   python3 benchmarks/balagan_throughput.py --config=configs/afd_dogs_wolves.py
#
# (`--no-deps` is deliberate: the device's own packages are used as they are.
# `python3 -m pip check` after the export lists unmet version requirements.)
# Checked off the device with a CPython 3.12.1 venv holding only device packages
# (jax 0.12.0.1, flax, optax, orbax, attrs, six, ...): the wheels installed this way,
# `pip check` was clean and the step, input and profile benchmarks ran.
#
# .whl/ must stay out of git: the repo's .gitignore lists `.whl/`.
#
# Usage: tools/device_wheels.sh [DEST]      (needs pip access to PyPI here)
# Env:   PYTHON  interpreter whose pip resolves (default: .venv/bin/python,
#                else python3); DEVICE_WHEELS_WORK  scratch folder (default
#                /tmp/device_wheels_work); MAX_MIB  size limit (default 60).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$REPO_ROOT/.whl}"
WORK="${DEVICE_WHEELS_WORK:-/tmp/device_wheels_work}"
MAX_MIB="${MAX_MIB:-60}"
if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
  PY="$REPO_ROOT/.venv/bin/python"
else
  PY="$(command -v python3)"
fi

# Target interpreter and platform.
TARGET_PY=3.12
TARGET_PY_FULL=3.12.3
TARGET_GLIBC_MAX=39   # manylinux_2_N accepted for N <= this
# Conservative platforms first (pip prefers earlier ones), newer glibc last.
PLATFORMS=()
for n in 28 27 26 25 24 23 22 21 20 19 18 17; do PLATFORMS+=("manylinux_2_${n}_x86_64"); done
PLATFORMS+=(manylinux2014_x86_64 manylinux_2_12_x86_64 manylinux2010_x86_64
            manylinux_2_5_x86_64 manylinux1_x86_64)
for ((n = 29; n <= TARGET_GLIBC_MAX; n++)); do PLATFORMS+=("manylinux_2_${n}_x86_64"); done

# Python packages already on the device image (KINDS.md, "Python packages
# already there"). These are never downloaded.
DEVICE_HAS="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal
annotated-doc anyio attrs botorch build certifi charset-normalizer chex click
cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist
fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader
lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath
msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx
ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft
nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3
uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp"
# Versions seen on the device (KINDS.md 'pip list' row); used for warnings only.
DEVICE_VERSIONS="jax==0.11.2 jaxlib==0.11.2 numpy==2.5.2"
export DEVICE_HAS DEVICE_VERSIONS TARGET_PY TARGET_PY_FULL TARGET_GLIBC_MAX

die() { echo "device_wheels: ERROR: $*" >&2; exit 1; }

# Run pip quietly into a log; on failure show the log's tail (minus the noise
# about missing local index folders) and return pip's status.
LOGN=0
pip_logged() {
  LOGN=$((LOGN + 1))
  local log="$WORK/logs/$LOGN.log"
  echo "pip $*" >"$log"
  local rc=0
  "$PY" -m pip "$@" </dev/null >>"$log" 2>&1 || rc=$?
  ((rc != 0)) || return 0
  echo "device_wheels: pip failed (log: $log):" >&2
  grep -v "^WARNING: Location 'file://" "$log" | tail -n 25 >&2
  return $rc
}

# --- clear outputs --------------------------------------------------------------
case "$WORK" in /|"$HOME"|"$REPO_ROOT") die "refusing to use $WORK as scratch folder" ;; esac
rm -rf "$WORK"
mkdir -p "$WORK"/{logs,cross,sdist,built}
if [[ -e "$DEST" && ! -d "$DEST" ]]; then die "$DEST exists and is not a folder"; fi
if [[ -d "$DEST" ]]; then
  other="$(find "$DEST" -mindepth 1 ! -name '*.whl' -print -quit)"
  [[ -z "$other" ]] || die "$DEST holds more than wheels ($other); refusing to clear it"
  find "$DEST" -mindepth 1 -maxdepth 1 -name '*.whl' -delete
fi
mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
echo "device_wheels: python $("$PY" -c 'import sys; print(sys.version.split()[0])') ($PY) resolves; target CPython $TARGET_PY manylinux x86_64"

# --- 1. resolve the project's dependencies natively -----------------------------
"$PY" - "$REPO_ROOT/pyproject.toml" >"$WORK/requirements.txt" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
EOF
echo "device_wheels: resolving $(wc -l <"$WORK/requirements.txt") requirements from pyproject.toml"
pip_logged install --quiet --dry-run --ignore-installed --report "$WORK/report.json" \
  -r "$WORK/requirements.txt" || die "pip could not resolve the project's dependencies"

# --- 2. choose what the device lacks --------------------------------------------
# Walk from the project's requirements (markers evaluated for the target), only
# through projects the device lacks; write NAME==VERSION lines.
"$PY" - "$WORK/report.json" "$WORK/requirements.txt" >"$WORK/keep.txt" <<'EOF'
import json, os, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

device = {canonicalize_name(n) for n in os.environ["DEVICE_HAS"].split()}
env = {"python_version": os.environ["TARGET_PY"],
       "python_full_version": os.environ["TARGET_PY_FULL"],
       "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
       "platform_machine": "x86_64"}

def applies(req, extras):
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in ({""} | set(extras)))

report = json.load(open(sys.argv[1]))
resolved = {canonicalize_name(i["metadata"]["name"]): i for i in report["install"]}
todo = [Requirement(l.strip()) for l in open(sys.argv[2]) if l.strip()]
seen, missing, device_extras = {}, [], {}
while todo:
    req = todo.pop()
    if not applies(req, []):
        continue
    name = canonicalize_name(req.name)
    extras = set(req.extras)
    if name in device:
        # Assume the device has its own dependencies, but follow the ones
        # that only the requested extras add (e.g. etils[epath] -> zipp),
        # as this machine's resolution of that package lists them.
        new = extras - device_extras.setdefault(name, set())
        if new and name in resolved:
            device_extras[name] |= new
            for d in resolved[name]["metadata"].get("requires_dist", []):
                dreq = Requirement(d)
                if dreq.marker is not None and applies(dreq, new) and not applies(dreq, []):
                    todo.append(dreq)
        continue
    item = resolved.get(name)
    if item is None:
        missing.append(str(req))
        continue
    if name in seen and extras <= seen[name]:
        continue
    seen[name] = seen.get(name, set()) | extras
    for d in item["metadata"].get("requires_dist", []):
        dreq = Requirement(d)
        if applies(dreq, seen[name]):
            todo.append(dreq)
if missing:
    sys.exit("needed on the target but not resolved by this pip "
             "(markers differ between python versions?): " + ", ".join(missing))
for name in sorted(seen):
    print(f"{name}=={resolved[name]['metadata']['version']}")
EOF
echo "device_wheels: projects the device lacks: $(tr '\n' ' ' <"$WORK/keep.txt")"

# --- 3. fetch a target wheel for each -------------------------------------------
plat_args=()
for p in "${PLATFORMS[@]}"; do plat_args+=(--platform "$p"); done
while read -r spec; do
  [[ -n "$spec" ]] || continue
  name="${spec%%==*}"
  # A wheel for CPython 3.12 on manylinux x86_64: cp312, abi3 or pure python.
  if pip_logged download --quiet --no-deps --only-binary=:all: \
      --python-version "$TARGET_PY" --implementation cp "${plat_args[@]}" \
      -d "$WORK/cross" "$spec" 2>/dev/null; then
    continue
  fi
  # No usable wheel: build the sdist here; it must come out pure python.
  echo "device_wheels: no wheel of $spec for the target; building its sdist"
  rm -rf "$WORK/sdist"/* "$WORK/tmpbuilt"
  pip_logged download --quiet --no-deps --no-binary "$name" -d "$WORK/sdist" "$spec" \
    || die "could not download an sdist of $spec"
  sdist="$(find "$WORK/sdist" -maxdepth 1 -type f | head -n 1)"
  pip_logged wheel --quiet --no-deps --no-binary "$name" -w "$WORK/tmpbuilt" "$sdist" \
    || die "could not build a wheel of $spec"
  for whl in "$WORK/tmpbuilt"/*.whl; do
    case "$(basename "$whl")" in
      *-py3-none-any.whl|*-py2.py3-none-any.whl) mv "$whl" "$WORK/built/" ;;
      *) die "$spec built into a non-pure wheel $(basename "$whl"); it cannot be built for $TARGET_PY here" ;;
    esac
  done
done <"$WORK/keep.txt"
cp "$WORK"/cross/*.whl "$DEST"/ 2>/dev/null || true
cp "$WORK"/built/*.whl "$DEST"/ 2>/dev/null || true

# --- 4. check: one version each, target tags, requirements covered -------------
"$PY" - "$DEST" "$WORK/keep.txt" "$WORK/requirements.txt" <<'EOF' || die "wheel check failed (see above)"
import os, sys, zipfile
from email.parser import Parser
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

dest, keep_file, req_file = sys.argv[1:4]
py = tuple(int(x) for x in os.environ["TARGET_PY"].split("."))
glibc_max = int(os.environ["TARGET_GLIBC_MAX"])
platforms = [f"manylinux_2_{n}_x86_64" for n in range(glibc_max, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
ok_tags = set(cpython_tags(py, platforms=platforms)) | set(
    compatible_tags(py, "cp%d%d" % py, platforms=platforms))
device = {canonicalize_name(n) for n in os.environ["DEVICE_HAS"].split()}
device_versions = dict(
    (canonicalize_name(s.split("==")[0]), s.split("==")[1])
    for s in os.environ["DEVICE_VERSIONS"].split())
env = {"python_version": os.environ["TARGET_PY"],
       "python_full_version": os.environ["TARGET_PY_FULL"],
       "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
       "platform_machine": "x86_64"}

errors, wheels = [], {}
for fn in sorted(f for f in os.listdir(dest) if f.endswith(".whl")):
    name, version, _, tags = parse_wheel_filename(fn)
    if name in wheels:
        errors.append(f"two versions of {name}: {wheels[name][0]} and {fn}")
    if not tags & ok_tags:
        errors.append(f"{fn}: no tag usable by CPython {os.environ['TARGET_PY']} manylinux x86_64")
    if name in device:
        errors.append(f"{fn}: the device already has {name}")
    with zipfile.ZipFile(os.path.join(dest, fn)) as z:
        meta_name = next(n for n in z.namelist()
                         if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        meta = Parser().parsestr(z.read(meta_name).decode("utf-8"))
    rp = meta.get("Requires-Python")
    if rp and not SpecifierSet(rp).contains(os.environ["TARGET_PY_FULL"]):
        errors.append(f"{fn}: Requires-Python {rp} excludes {os.environ['TARGET_PY_FULL']}")
    wheels[name] = (fn, [Requirement(r) for r in meta.get_all("Requires-Dist") or []])

expected = {canonicalize_name(l.split("==")[0]) for l in open(keep_file) if l.strip()}
for name in sorted(expected - wheels.keys()):
    errors.append(f"no wheel for {name}")

def applies(r, extras):
    return r.marker is None or any(r.marker.evaluate({**env, "extra": e}) for e in extras)

# Requirements of each kept wheel (non-extra ones, plus the extras that the
# project or other kept wheels ask of it), evaluated for the target.
extras_wanted = {n: {""} for n in wheels}
roots = [Requirement(l.strip()) for l in open(req_file) if l.strip()]
for r in roots:
    if canonicalize_name(r.name) in wheels and applies(r, {""}):
        extras_wanted[canonicalize_name(r.name)] |= set(r.extras)
changed = True
while changed:
    changed = False
    for name, (_, reqs) in wheels.items():
        for r in reqs:
            rn = canonicalize_name(r.name)
            if (rn in wheels and applies(r, extras_wanted[name])
                    and not set(r.extras) <= extras_wanted[rn]):
                extras_wanted[rn] |= set(r.extras)
                changed = True
uncovered, on_device = [], {}
for name, (fn, reqs) in sorted(wheels.items()):
    for r in reqs:
        if not applies(r, extras_wanted[name]):
            continue
        rn = canonicalize_name(r.name)
        if rn in wheels:
            v = parse_wheel_filename(wheels[rn][0])[1]
            if r.specifier and not r.specifier.contains(v, prereleases=True):
                errors.append(f"{name} needs {r}, kept {rn} {v}")
        elif rn in device:
            if r.specifier:
                known = device_versions.get(rn)
                if known and not r.specifier.contains(known, prereleases=True):
                    errors.append(f"{name} needs {r}; the device has {rn} {known}")
                else:
                    key = (name, r.name, known)
                    on_device[key] = on_device.get(key, SpecifierSet()) & r.specifier
        else:
            uncovered.append(f"{name} needs {r}")

print("device_wheels: requirements of kept wheels: all names covered"
      if not uncovered else "device_wheels: UNCOVERED requirements:")
for u in uncovered:
    print("  " + u)
if on_device:
    print("device_wheels: version requirements on device packages (not checked here;"
          " `python3 -m pip check` on the device):")
    for (name, rname, known), spec in on_device.items():
        print(f"  {name}: {rname}{spec}" + (f" (device: {known})" if known else ""))
errors += [f"uncovered requirement: {u}" for u in uncovered]
for e in errors:
    print("device_wheels: ERROR: " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF

# --- 5. list and size ------------------------------------------------------------
echo "device_wheels: wheels in $DEST:"
total=0
while IFS= read -r -d '' whl; do
  size=$(stat -c %s "$whl")
  total=$((total + size))
  printf '  %9d  %s\n' "$size" "$(basename "$whl")"
done < <(find "$DEST" -mindepth 1 -maxdepth 1 -type f -name '*.whl' -print0 | sort -z)
limit=$((MAX_MIB * 1024 * 1024))
total_mib=$(awk -v b="$total" 'BEGIN { printf "%.2f", b / 1048576 }')
echo "device_wheels: $(find "$DEST" -mindepth 1 -maxdepth 1 -type f -name '*.whl' | wc -l) wheels, total $total bytes ($total_mib MiB)"
if ((total > limit)); then
  die "total $total_mib MiB exceeds the $MAX_MIB MiB limit (the device takes 64 MiB with the repo)"
fi
