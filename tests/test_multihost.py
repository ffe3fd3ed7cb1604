"""Multi-host for real: 2 JAX processes on this machine (2 CPU devices each, joined
through a coordinator on 127.0.0.1, gloo collectives) run the mechanics a multi-host
job relies on (`multihost_checks.py`).
"""

import os
import sys

import multihost_launch


def test_two_processes_shard_reduce_checkpoint_and_share_files(tmp_path):
  outputs = multihost_launch.run(
      [sys.executable, os.path.join(multihost_launch.ROOT, "tests", "multihost_checks.py"),
       str(tmp_path)], processes=2, log_dir=str(tmp_path))
  assert [out.split()[-1:] for out in outputs] == [["OK"], ["OK"]]
