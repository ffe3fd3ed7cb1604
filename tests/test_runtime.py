"""When the entrypoints join a multi-host job."""

import logging
import re

import jax
import pytest

from i2i_jax.errors import ConfigError
from i2i_jax.training import runtime

_LAUNCHER_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS",
                       "MEGASCALE_COORDINATOR_ADDRESS", "CLOUD_TPU_TASK_ID",
                       "I2I_JAX_DISTRIBUTED", *runtime.EXPLICIT_VARIABLES)


@pytest.fixture
def joins(monkeypatch):
  """Records jax.distributed.initialize() calls (1, or their keyword arguments) instead
  of making them."""
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize",
                      lambda **kwargs: calls.append(kwargs or 1))
  monkeypatch.setenv("I2I_JAX_CACHE_DIR", "")  # leave this process' compile cache alone
  for name in _LAUNCHER_VARIABLES:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(runtime, "_on_tpu_vm", lambda: False)
  return calls


def test_single_machine_does_not_join(joins):
  runtime.initialize()
  assert not joins


@pytest.mark.parametrize("name,value", [("JAX_COORDINATOR_ADDRESS", "10.0.0.2:1234"),
                                        ("TPU_WORKER_HOSTNAMES", "w0,w1"),
                                        ("SLURM_NTASKS", "4")])
def test_launcher_variables_join(joins, monkeypatch, name, value):
  monkeypatch.setenv(name, value)
  runtime.initialize()
  assert joins == [1]


def test_tpu_vm_without_variables_joins_and_tolerates_a_single_host(joins, monkeypatch, caplog):
  monkeypatch.setattr(runtime, "_on_tpu_vm", lambda: True)
  runtime.initialize()
  assert joins == [1]

  def no_cluster(**kwargs):
    del kwargs
    raise ValueError("coordinator_address should be defined")

  monkeypatch.setattr(jax.distributed, "initialize", no_cluster)
  with caplog.at_level(logging.WARNING):
    runtime.initialize()  # no exception: it warns and runs single-host
  assert "Not joining a multi-host job (coordinator_address should be defined)" in caplog.text


def test_environment_forces_the_choice(joins, monkeypatch):
  monkeypatch.setenv("SLURM_NTASKS", "4")
  monkeypatch.setenv("I2I_JAX_DISTRIBUTED", "0")
  runtime.initialize()
  assert not joins
  monkeypatch.delenv("SLURM_NTASKS")
  monkeypatch.setenv("I2I_JAX_DISTRIBUTED", "1")
  runtime.initialize()
  assert joins == [1]


def test_explicit_variables_name_coordinator_count_and_id(joins, monkeypatch):
  monkeypatch.setenv("I2I_JAX_COORDINATOR", "10.0.0.2:1234")
  monkeypatch.setenv("I2I_JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("I2I_JAX_PROCESS_ID", "3")
  runtime.initialize()
  assert joins == [{"coordinator_address": "10.0.0.2:1234", "num_processes": 4,
                    "process_id": 3}]


@pytest.mark.parametrize("count,index,message", [
    ("", "1", "I2I_JAX_NUM_PROCESSES not set"), ("2", "2", "not in [0, I2I_JAX_NUM_PROCESSES=2)"),
    ("two", "0", "must be integers")])
def test_explicit_variables_are_checked(joins, monkeypatch, count, index, message):
  monkeypatch.setenv("I2I_JAX_COORDINATOR", "10.0.0.2:1234")
  monkeypatch.setenv("I2I_JAX_NUM_PROCESSES", count)
  monkeypatch.setenv("I2I_JAX_PROCESS_ID", index)
  with pytest.raises(ConfigError, match=re.escape(message)):
    runtime.initialize()
  assert not joins


def test_a_coordinator_alone_says_what_is_missing(monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.2:1234")
  monkeypatch.setenv("I2I_JAX_CACHE_DIR", "")

  def without_count(**kwargs):
    del kwargs
    raise ValueError("Number of processes must be defined.")

  monkeypatch.setattr(jax.distributed, "initialize", without_count)
  with pytest.raises(ConfigError, match="I2I_JAX_NUM_PROCESSES"):
    runtime.initialize()
