"""i2i_jax.benchmark: step timing figures and the profile's per-op table."""

import types

import jax
import jax.numpy as jnp
import pytest

from i2i_jax import benchmark

M, K, LOOP = 32, 64, 5


def matmul_chain_step(unrolled: bool):
  """A toy step: LOOP matmuls of the state, scanned or unrolled."""

  def step(state, batch):
    body = lambda h, _: (jnp.tanh(h @ batch), None)
    if unrolled:
      for _ in range(LOOP):
        state, _ = body(state, None)
    else:
      state, _ = jax.lax.scan(body, state, None, length=LOOP)
    return state, {"norm": jnp.linalg.norm(state)}

  return step


def test_time_step_counts_every_loop_iteration_and_formats_cpu_figures():
  """XLA counts a while body once; the loop-free twin gives the true FLOPs."""
  workload = benchmark.Workload(
      title="toy", step_fn=matmul_chain_step(unrolled=False), state=jnp.ones((M, K)),
      batch=jnp.eye(K), images_per_step=M, flops_step_fn=matmul_chain_step(unrolled=True))
  figures = benchmark.time_step(workload, steps=2, warmup=1)
  assert figures["flops_per_step"] == pytest.approx(LOOP * 2 * M * K * K, rel=0.01)
  assert figures["images_per_s"] == pytest.approx(M * figures["steps_per_s"])
  assert 0 < figures["dispatch_ms"] <= figures["ms_per_step"]
  text = benchmark.format_results(workload.title, figures)
  assert "MFU               n/a" in text  # no peak FLOP/s for a CPU
  assert "peak memory       n/a" in text  # CPU devices report no memory stats
  assert "XLA memory" in text and "images/s" in text


def test_peak_flops_prefers_the_most_specific_device_name():
  device = lambda kind: types.SimpleNamespace(device_kind=kind)
  assert benchmark.device_peak_flops(device("NVIDIA H100 PCIe")) == 756e12
  assert benchmark.device_peak_flops(device("NVIDIA H100 80GB HBM3")) == 989e12
  assert benchmark.device_peak_flops(device("cpu")) is None


def op(name, ts, dur, pid=1, tid=1, **args):
  return {"ph": "X", "name": name, "ts": ts, "dur": dur, "pid": pid, "tid": tid, "args": args}


def test_self_times_take_nested_ops_out_of_their_parent():
  """XLA:CPU style: ops tagged with hlo_op; a while loop holds its body's ops."""
  trace = {"traceEvents": [
      op("ThunkExecutor::Execute", 0, 100),  # not an op: no hlo_op tag
      op("while.1", 0, 50, hlo_op="while.1"),
      op("fusion.2", 10, 20, hlo_op="fusion.2"),
      op("fusion.2", 30, 15, hlo_op="fusion.2"),
      op("conv.3", 60, 30, tid=2, hlo_op="conv.3"),
  ]}
  times = {o.name: (o.calls, o.self_us) for o in benchmark.op_self_times(trace)}
  assert times == {"while.1": (1, 15), "fusion.2": (2, 35), "conv.3": (1, 30)}


def test_accelerator_traces_use_the_xla_ops_line():
  meta = lambda kind, pid, tid, name: {"ph": "M", "name": kind, "pid": pid, "tid": tid,
                                       "args": {"name": name}}
  trace = {"traceEvents": [
      meta("process_name", 7, 0, "/device:GPU:0"), meta("thread_name", 7, 1, "XLA Ops"),
      meta("thread_name", 7, 2, "Stream #20(Compute)"), meta("process_name", 1, 0, "/host:CPU"),
      op("fusion.1", 0, 40, pid=7, tid=1), op("sm90_xmma_kernel", 0, 40, pid=7, tid=2),
      op("PjitFunction(step)", 0, 500, pid=1, tid=9)]}
  assert [o.name for o in benchmark.op_self_times(trace)] == ["fusion.1"]


def test_cpu_profile_names_ops_by_their_jax_source(tmp_path):
  """A real trace from this jax version: its ops are instructions of the profiled
  executable, and the HLO metadata names the JAX operations they came from."""
  x = jnp.ones((128, 128))
  compiled = jax.jit(lambda x: jnp.sort(jnp.tanh(x @ x), axis=0).sum()).lower(x).compile()
  compiled(x).block_until_ready()
  with jax.profiler.trace(str(tmp_path), create_perfetto_trace=True):
    compiled(x).block_until_ready()
  ops = benchmark.op_self_times(benchmark.load_trace(str(tmp_path)))
  sources = benchmark.hlo_op_names(compiled.as_text())
  assert ops and all(o.name in sources for o in ops), ([o.name for o in ops], sources)
  grouped = {o.name for o in benchmark.group_by_operation(ops, sources)}
  assert grouped <= {"dot_general", "tanh", "sort", "reduce_sum"}, grouped
  table = benchmark.format_top_ops(ops, title="ops", steps=1, step_ms=1.0, top=3,
                                   sources=sources)
  assert len(table.splitlines()) == 2 + min(3, len(ops))
