"""Running the training CLIs as real subprocesses: tiny configs as --config flags, and
signals sent once a run reports a given step."""

import os
import re
import subprocess
import sys

import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEP_LINE = re.compile(r"step (\d+)/")


def _leaves(config, prefix: str = "") -> dict:
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(_leaves(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def override_flags(base: ml_collections.ConfigDict,
                   config: ml_collections.ConfigDict) -> list[str]:
  """The --config.KEY=VALUE flags that turn config file `base` into `config`."""
  base_leaves = _leaves(base)
  return [f"--config.{key}={value}" for key, value in _leaves(config).items()
          if base_leaves[key] != value]


def command(module: str, config_file: str, workdir, base, config) -> list[str]:
  """The CLI `module` with `config_file` overridden to `config` (a tiny test config)."""
  return [sys.executable, "-m", module, f"--config={config_file}",
          f"--workdir={workdir}", *override_flags(base, config)]


def run_until_step(cmd, step: int, sig: int, pattern: re.Pattern = STEP_LINE):
  """Starts `cmd`, sends `sig` once a line matching `pattern` reports `step` or later;
  returns (returncode, stderr)."""
  process = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             text=True)
  lines = []
  for line in process.stderr:
    lines.append(line)
    match = pattern.search(line)
    if match and int(match.group(1)) >= step:
      process.send_signal(sig)
      break
  lines.extend(process.stderr)
  return process.wait(timeout=300), "".join(lines)
