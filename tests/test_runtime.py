"""When the entrypoints join a multi-host job."""

import logging

import jax
import pytest

from i2i_jax.training import runtime

_LAUNCHER_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS",
                       "MEGASCALE_COORDINATOR_ADDRESS", "CLOUD_TPU_TASK_ID",
                       "I2I_JAX_DISTRIBUTED")


@pytest.fixture
def joins(monkeypatch):
  """Records jax.distributed.initialize() calls instead of making them."""
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda: calls.append(1))
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

  def no_cluster():
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
