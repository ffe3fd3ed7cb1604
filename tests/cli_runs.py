"""Running the training CLIs as real subprocesses: tiny configs as --config flags, and
signals sent once a run reports a given step."""

import importlib
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
  """The --config.KEY=VALUE flags that turn config file `base` into `config`.

  A None cannot be given this way (a tuple field parses "None" as `(None,)`), so
  `config` must not unset what `base` sets.
  """
  base_leaves = _leaves(base)
  flags = {key: value for key, value in _leaves(config).items() if base_leaves[key] != value}
  unset = [key for key, value in flags.items() if value is None]
  if unset:
    raise ValueError(f"--config flags cannot unset {unset}")
  return [f"--config.{key}={value}" for key, value in flags.items()]


def command(module: str, config_file: str, workdir, config) -> list[str]:
  """The CLI `module` with `config_file` (a module under the repository root) overridden
  to `config` (a tiny test config)."""
  base = importlib.import_module(config_file.removesuffix(".py").replace("/", ".")).get_config()
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


def reported_steps(log: str, pattern: re.Pattern = STEP_LINE) -> list[int]:
  """The steps that a run's log reports, in order."""
  return [int(m) for m in pattern.findall(log)]
