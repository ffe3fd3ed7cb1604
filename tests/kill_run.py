"""Killing a real training process at a step it reports, for the preemption tests."""

import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_until_step(cmd, step_line: re.Pattern, step: int, sig: int) -> tuple[int, str]:
  """Starts `cmd` in the repository root and sends `sig` once a stderr line matches
  `step_line` with group 1 >= `step`; returns (returncode, stderr)."""
  process = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             text=True)
  lines = []
  for line in process.stderr:
    lines.append(line)
    match = step_line.search(line)
    if match and int(match.group(1)) >= step:
      process.send_signal(sig)
      break
  lines.extend(process.stderr)
  return process.wait(timeout=300), "".join(lines)


def reported_steps(step_line: re.Pattern, log: str) -> list[int]:
  return [int(m) for m in step_line.findall(log)]
