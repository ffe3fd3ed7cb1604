"""Shared pytest set-up: parsed absl flags (grain reads them) and a compile cache."""
import os
import tempfile

from absl import flags

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
