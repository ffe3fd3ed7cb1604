"""The entrypoints' shared command line: --config (ml_collections), --workdir, and
one-line errors for bad input.

A misspelt config field, a value of the wrong type, a missing config file, data that
is not there or a checkpoint from another config end the program with one line on
stderr naming the field/file/key (exit status 2), not a traceback: those are the
user's to fix (--verbosity=1 logs the traceback too). Anything else is a bug and
keeps its traceback.
"""

import contextlib
import sys
from typing import Callable

from absl import app, flags, logging
from ml_collections import config_flags

from i2i_jax import errors
from i2i_jax.training import runtime

FLAGS = flags.FLAGS
INPUT_ERROR_STATUS = 2


def fail(message: str) -> None:
  """Exits with `message` as one line on stderr."""
  print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
  sys.exit(INPUT_ERROR_STATUS)


@contextlib.contextmanager
def input_errors_as_one_line():
  """Turns bad input (and a diverged run, which says what to do) into `fail(...)`."""
  try:
    yield
  except (errors.InputError, errors.TrainingDiverged) as e:
    logging.debug("Input error", exc_info=True)  # the traceback, with --verbosity=1
    fail(str(e))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with config problems reported by `fail`.

  Overrides are applied while parsing (a misspelt field raises AttributeError there);
  the config file itself is loaded on first access, so it is touched here too.
  """
  try:
    argv = FLAGS(argv)
    if "config" in FLAGS:
      FLAGS.config.to_dict()  # A file that failed to load raises on first use.
  except flags.Error as e:
    fail(str(e))
  except AttributeError as e:  # ml_collections: KeyError("'bach_size'\nDid you mean ...")
    cause = e.args[0] if e.args else e
    text = cause.args[0] if isinstance(cause, KeyError) and cause.args else str(cause)
    fail(f"unknown config field {text}")
  except OSError as e:  # the config file is missing or unreadable
    fail(str(e))
  return argv


def run(main: Callable[[list[str]], None]) -> None:
  """`app.run(main)` with one-line reporting of bad flags and input errors."""

  def checked_main(argv):
    with input_errors_as_one_line():
      main(argv)

  app.run(checked_main, flags_parser=parse_flags)


def run_training(train_and_evaluate: Callable) -> None:
  """Defines --config/--workdir, then runs `train_and_evaluate(config, workdir)`.

  `lock_config` makes a misspelt override (--config.bach_size=8) fail at once. A run
  stopped by SIGTERM (`errors.Preempted`, after its checkpoint) exits with status 0;
  `launch/entrypoint.sh` turns that into 143 where a scheduler must retry.
  """
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and "
                      "samples; re-using it resumes the run.")
  config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                  lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    runtime.initialize()
    logging.info("Config:\n%s", FLAGS.config)
    try:
      train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except errors.Preempted as e:
      logging.warning("Training %s.", e)

  run(main)
