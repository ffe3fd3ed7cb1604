"""Errors in what the user supplied (config, data, checkpoints), as opposed to bugs.

The entrypoints print these as one line naming the field, file or key, without a
traceback (`i2i_jax.training.cli`); anything else keeps its traceback. They subclass
ValueError, so callers that catch ValueError keep working.
"""


class InputError(ValueError):
  """Bad input the user can fix; the message says what and where."""


class ConfigError(InputError):
  """A config field with an unknown or inconsistent value."""


class DataError(InputError):
  """Data that is missing, unprepared, unreadable or of the wrong shape."""


class CheckpointError(InputError):
  """A checkpoint that is missing, unreadable or written by another config."""


class TrainingDiverged(RuntimeError):
  """Losses or gradients stayed non-finite (config.nonfinite says how to react)."""


class Preempted(Exception):
  """SIGTERM stopped training after a checkpoint was written; re-running resumes.

  Raised rather than returned so that nothing after the interrupted stage runs (BalaGAN
  would otherwise cluster a half-trained encoder and mark stage 1 as done).
  """

  def __init__(self, directory, step: int):
    super().__init__(f"stopped by SIGTERM at step {step}; the checkpoint is in {directory}; "
                     "re-run the same command to resume")
    self.step = step
