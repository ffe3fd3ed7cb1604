"""The GPU speed report: our steps beside the authors' PyTorch step, in one call.

A device machine is lent for minutes, one command of at most 600 s at a time, so
everything is measured by one command, on the same machine in the same call (the only
way the ratio to the authors' step means anything):

  python3 benchmarks/gpu_report.py --wheels=.whl --output=$OUT/gpu_report.json
  python benchmarks/gpu_report.py --tiny --output=/tmp/gpu_report.json   # CPU smoke run

It installs the carried wheels (tools/device_wheels.sh; the device lacks grain, clu,
ml_collections, tfds), then runs, in this order, each as a subprocess with its own
time limit: the authors' step (`--anchor`/time_anchor.py) at batch 10 and 3; our
BalaGAN step at batch 10 in the default dtype, in float32 and with the GPU XLA flags;
JD-BW's 32x32 step (B=128, d=5); the input pipelines at the same shapes, offline.
A part that hangs or fails is recorded as such and the rest still run: each part may
use its share of `--budget_s` plus whatever earlier parts left unused. It prints one
table and writes it, with each part's figures and output tail, as JSON to `--output`
after every part (a killed call still leaves what was measured) and the parts' whole
output beside it (`.log`). tools/prepare_gpu_run.sh fills `.whl` and `.anchor` and
prints the device command.

`--tiny` shrinks batches, image sizes, steps and our model widths (the authors' keep
theirs) so that every part runs on a small CPU in minutes: its figures test the
plumbing, not speed. Standard library only: it runs before the wheels are installed.
"""

import argparse
import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --tiny: 32x32 images (resized from 36, as 128 from 140), our BalaGAN model with 5
# modalities and JD-BW shrunk as tests/balagan_tiny.py and tests/jdbw_tiny.py do.
TINY_IMAGES = ["--config.data.source.image_size=32", "--config.data.target.image_size=32",
               "--config.data.source.resize=36", "--config.data.target.resize=36"]
TINY_BALAGAN = ["--num_classes=5", *TINY_IMAGES, "--config.model.nf=8",
                "--config.model.nf_mlp=16", "--config.model.latent_dim=8",
                "--config.model.num_res_blocks=1", "--config.model.d_nf=8",
                "--config.model.d_num_res_blocks=2"]
TINY_JDBW_SHAPE = ["--config.batch_size=4", "--config.d_steps=1"]
TINY_JDBW = [*TINY_JDBW_SHAPE, "--config.model.g_features=8",
             "--config.model.d_levels=((4, 8), (8, 8), (8, 16))", "--config.model.w_features=4"]
EMBEDDED_DIGITS = ["--config.data.source.kind=embedded_mnist",
                   "--config.data.target.kind=embedded_mnist"]


@dataclasses.dataclass
class Part:
  """One measurement. `kind`: "install"; "authors" (time_anchor.py's JSON line);
  "ours", "jdbw" or "input" (the benchmark's --output JSON)."""

  name: str
  kind: str
  argv: list[str]
  share: float  # of the time budget
  batch: int | None = None
  size: int | None = None


def plan(args) -> list[Part]:
  """The parts in the issue's order, at full size or `--tiny`."""
  tiny, py = args.tiny, sys.executable
  big, small, size = (2, 1, 32) if tiny else (10, 3, 128)
  jdbw_batch = 4 if tiny else 128
  steps = ["--steps=2", "--warmup=1"] if tiny else ["--steps=50", "--warmup=5"]
  wheels = sorted(glob.glob(os.path.join(os.path.abspath(args.wheels), "*.whl")))
  install = [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
             "--no-cache-dir", "--upgrade", "--target", os.path.abspath(args.site), *wheels]

  def authors(batch):
    return [args.torch_python, os.path.join(os.path.abspath(args.anchor), "time_anchor.py"),
            f"--batch={batch}", f"--size={size}",
            *(["--iters=1", "--warmup=0"] if tiny else ["--iters=50", "--warmup=10"])]

  ours = [py, "benchmarks/balagan_throughput.py", "--config=configs/afd_dogs_wolves.py",
          f"--config.batch_size={big}", *steps, *(TINY_BALAGAN if tiny else [])]
  jdbw = [py, "benchmarks/jdbw_throughput.py", "--config=configs/mnist_srmnist.py",
          *(["--steps=2", "--warmup=1", *TINY_JDBW] if tiny else ["--steps=30", "--warmup=3"])]
  input_steps = ["--steps=3", "--warmup=1"] if tiny else ["--steps=50", "--warmup=5"]
  input_balagan = [py, "benchmarks/input_throughput.py", "--method=balagan",
                   "--config=configs/afd_dogs_wolves.py", f"--config.batch_size={big}",
                   *input_steps, *(["--fake_images=12", "--fake_size=64", *TINY_IMAGES] if tiny
                                   else ["--fake_images=200"])]
  input_jdbw = [py, "benchmarks/input_throughput.py", "--method=jdbw",
                "--config=configs/mnist_srmnist.py", *EMBEDDED_DIGITS, *input_steps,
                *(TINY_JDBW_SHAPE if tiny else [])]
  return [
      Part("install_wheels", "install", install if wheels else [], 0.04),
      Part("authors", "authors", authors(big), 0.10, big, size),
      Part("authors_small_batch", "authors", authors(small), 0.08, small, size),
      Part("ours", "ours", ours, 0.18, big, size),
      Part("ours_float32", "ours", ours + ["--config.compute_dtype=float32"], 0.15, big, size),
      Part("ours_xla_flags", "ours", ours + ["--xla_gpu_flags"], 0.15, big, size),
      Part("jdbw", "jdbw", jdbw, 0.14, jdbw_batch, 32),
      Part("input_balagan", "input", input_balagan, 0.09, big, size),
      Part("input_jdbw", "input", input_jdbw, 0.07, jdbw_batch, 32),
  ]


def run_part(argv: list[str], *, timeout: float, env: dict, log) -> tuple[str, float, str]:
  """(status, wall seconds, output) of one command, killed with its process group at
  `timeout`. Output goes to the open `log` file (no pipe a stray child could hold)."""
  if timeout <= 1:
    return "skipped (no time left)", 0.0, ""
  log.write(f"\n===== {' '.join(argv)}\n")
  log.flush()
  start_offset = log.tell()
  t0 = time.monotonic()
  proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, start_new_session=True)
  try:
    code = proc.wait(timeout=timeout)
    status = "ok" if code == 0 else f"failed (exit {code})"
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    status = f"timed out ({timeout:.0f} s)"
  wall = time.monotonic() - t0
  log.flush()
  with open(log.name, errors="replace") as f:
    f.seek(start_offset)
    return status, wall, f.read()


def authors_figures(output: str) -> dict | None:
  """time_anchor.py's JSON line (the last line that parses), in our figures' names."""
  for line in reversed(output.splitlines()):
    try:
      raw = json.loads(line)
    except ValueError:
      continue
    if isinstance(raw, dict) and "ms_per_iter" in raw:
      return {**raw, "ms_per_step": raw["ms_per_iter"], "peak_memory_gib": raw["peak_gib"]}
  return None


def make_row(part: Part, status: str, wall_s: float, output: str,
             figures: dict | None) -> dict:
  """One table row: the headline figures, and the raw ones and output tail for the JSON."""
  figures = figures or {}
  if status == "ok" and part.kind in ("authors", "ours", "jdbw", "input") and not figures:
    status = "failed (no figures)"
  return {"part": part.name, "batch": part.batch, "size": part.size, "status": status,
          "ms_per_step": figures.get("ms_per_step"),
          "images_per_s": figures.get("images_per_s"), "ratio_to_authors": None,
          "mfu": figures.get("mfu"), "peak_memory_gib": figures.get("peak_memory_gib"),
          "compile_s": figures.get("compile_s"), "wall_s": wall_s,
          "command": part.argv, "figures": figures,
          "output_tail": output[-3000:] if status != "ok" else output[-600:]}


def add_ratios(rows: list[dict], kinds: dict[str, str]) -> None:
  """Our BalaGAN images/s over the authors' at the same batch and image size."""
  authors = {(r["batch"], r["size"]): r["images_per_s"] for r in rows
             if kinds[r["part"]] == "authors" and r["images_per_s"]}
  for row in rows:
    theirs = authors.get((row["batch"], row["size"]))
    if kinds[row["part"]] == "ours" and theirs and row["images_per_s"]:
      row["ratio_to_authors"] = row["images_per_s"] / theirs


def format_table(rows: list[dict]) -> str:
  def num(value, fmt, scale=1, unit=""):
    return "-" if value is None else format(scale * value, fmt) + unit

  lines = [f"{'part':<20} {'batch':>5} {'size':>4}  {'status':<20} {'ms/step':>9} "
           f"{'images/s':>9} {'x authors':>9} {'MFU':>6} {'peak GiB':>8} {'compile s':>9} "
           f"{'wall s':>7}"]
  for r in rows:
    lines.append(
        f"{r['part']:<20} {num(r['batch'], 'd'):>5} {num(r['size'], 'd'):>4}  "
        f"{r['status']:<20} {num(r['ms_per_step'], '.2f'):>9} "
        f"{num(r['images_per_s'], '.1f'):>9} {num(r['ratio_to_authors'], '.2f'):>9} "
        f"{num(r['mfu'], '.1f', 100, '%'):>6} "
        f"{num(r['peak_memory_gib'], '.2f'):>8} {num(r['compile_s'], '.1f'):>9} "
        f"{r['wall_s']:7.1f}")
  return "\n".join(lines)


def environment() -> dict:
  """What the figures depend on beyond the code: interpreter, GPU, driver, clocks."""
  env = {"python": sys.version.split()[0], "host": os.uname().nodename,
         "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
  if shutil.which("nvidia-smi"):
    try:
      env["nvidia_smi"] = subprocess.run(
          ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
           "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except subprocess.TimeoutExpired:
      env["nvidia_smi"] = "timed out"
  return env


def write_json(path: str, report: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(report, f, indent=1)
  os.replace(tmp, path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--output", default="gpu_report.json", help="JSON report path.")
  parser.add_argument("--wheels", default=".whl", help="Folder of wheels to install first.")
  parser.add_argument("--site", default=os.path.join(tempfile.gettempdir(), "gpu_report_site"),
                      help="Where the wheels are installed (put first on PYTHONPATH).")
  parser.add_argument("--anchor", default=".anchor/balagan_torch",
                      help="The carried copy of ../shared/anchor/balagan_torch.")
  parser.add_argument("--torch_python", default=sys.executable,
                      help="Interpreter with torch and pyyaml for the authors' step.")
  parser.add_argument("--tiny", action="store_true", help="CPU-sized smoke run.")
  parser.add_argument("--budget_s", type=float, default=None,
                      help="Seconds for all parts, install included (default 510; tiny 1800).")
  parser.add_argument("--only", default="", help="Comma-separated part names to run.")
  args = parser.parse_args(argv)
  budget = args.budget_s or (1800.0 if args.tiny else 510.0)
  parts = plan(args)
  if args.only:
    parts = [p for p in parts if p.name in args.only.split(",")]
  kinds = {p.name: p.kind for p in parts}
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(
      ([args.site] if any(p.kind == "install" and p.argv for p in parts) else [])
      + [REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  output = os.path.abspath(args.output)
  log_path = os.path.splitext(output)[0] + ".log"
  report = {"tiny": args.tiny, "budget_s": budget, "environment": environment(), "rows": []}
  print(f"gpu_report: {len(parts)} parts in {budget:.0f} s; log {log_path}",
        flush=True)
  start, total, used = time.monotonic(), sum(p.share for p in parts), 0.0
  with tempfile.TemporaryDirectory() as tmp, open(log_path, "w+") as log:
    for i, part in enumerate(parts):
      used += part.share
      timeout = start + budget * used / total - time.monotonic()
      figures = None
      if not part.argv:
        status, wall, text = "skipped (no wheels)", 0.0, ""
      else:
        json_path = os.path.join(tmp, part.name + ".json")
        argv = part.argv + ([f"--output={json_path}"]
                            if part.kind in ("ours", "jdbw", "input") else [])
        status, wall, text = run_part(argv, timeout=timeout, env=env, log=log)
        if part.kind == "authors":
          figures = authors_figures(text)
        elif os.path.exists(json_path):
          with open(json_path) as f:
            figures = json.load(f)
      report["rows"].append(make_row(part, status, wall, text, figures))
      add_ratios(report["rows"], kinds)
      write_json(output, report)
      row = report["rows"][-1]
      print(f"[{i + 1}/{len(parts)}] {part.name}: {row['status']} in {wall:.1f} s"
            + (f", {row['images_per_s']:.1f} images/s" if row["images_per_s"] else ""),
            flush=True)
  print(format_table(report["rows"]))
  print(f"gpu_report: wrote {output}")


if __name__ == "__main__":
  main()
