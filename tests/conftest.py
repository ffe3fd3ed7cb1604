"""Shared pytest set-up: parsed absl flags (grain reads them), a compile cache and a GCS
emulator."""
import os
import tempfile

import pytest
from absl import flags

import gcs_emulator

# Counter-based RNG keys compile in a fraction of threefry's time on XLA:CPU, and
# model initialisation is a large part of this suite's compile time. Set through the
# environment so the CLI subprocesses the tests start use it too.
os.environ.setdefault("JAX_DEFAULT_PRNG_IMPL", "rbg")

# grain's multiprocessing reads absl flags; under pytest nobody parses them.
flags.FLAGS.mark_as_parsed()

import jax  # noqa: E402  (after the env tweaks above)

# Re-use XLA compilations across test processes: CPU compiles dominate the suite.
_CACHE = os.environ.get("I2I_TEST_JAX_CACHE",
                        os.path.join(tempfile.gettempdir(), "i2i_jax_test_cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
os.environ.setdefault("I2I_JAX_CACHE_DIR", _CACHE)  # the entrypoints' cache, in subprocesses
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture(scope="session")
def gcs(tmp_path_factory):
  """A GCS emulator for the session, with its clients' variables set in this process
  (and so in the CLIs the tests start); skips only where the emulator cannot run."""
  try:
    emulator = gcs_emulator.start(tmp_path_factory.mktemp("gcs") / "fake-gcs-server.log")
  except gcs_emulator.Unavailable as e:
    pytest.skip(f"no GCS emulator: {e}")
  with pytest.MonkeyPatch.context() as patch:
    for name, value in emulator.env.items():
      patch.setenv(name, value)
    yield emulator
  emulator.stop()
