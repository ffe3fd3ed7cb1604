"""benchmarks/gpu_report.py's orchestration: parts with their own time limits, the
authors' JSON line parsed, ratios at equal shapes, JSON written even when a part hangs.

The real parts run in the device call (and `--tiny` on CPU, by hand: minutes); here a
fake anchor stands in for the authors' code, so the test takes seconds.
"""

import json
import os
import sys
import textwrap

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

import gpu_report  # noqa: E402  (a script, not a package)

FAKE_ANCHOR = textwrap.dedent("""\
    import argparse, json, time
    p = argparse.ArgumentParser()
    for name in ("batch", "size", "iters", "warmup"):
      p.add_argument("--" + name, type=int)
    a = p.parse_args()
    if a.batch == 1:  # the small batch of --tiny hangs: its time limit must stop it
      time.sleep(60)
    print("log noise {not json")
    print(json.dumps({"ms_per_iter": 50.0, "images_per_s": a.batch / 0.05, "peak_gib": None}))
""")


def test_parts_run_in_order_with_their_own_limits_and_the_json_survives_a_hang(tmp_path):
  anchor = tmp_path / "anchor"
  anchor.mkdir()
  (anchor / "time_anchor.py").write_text(FAKE_ANCHOR)
  output = tmp_path / "report.json"
  gpu_report.main(["--tiny", f"--anchor={anchor}", f"--wheels={tmp_path / 'none'}",
                   f"--output={output}", "--only=install_wheels,authors,authors_small_batch",
                   "--budget_s=6"])
  report = json.loads(output.read_text())
  rows = {row["part"]: row for row in report["rows"]}
  assert list(rows) == ["install_wheels", "authors", "authors_small_batch"]
  assert rows["install_wheels"]["status"] == "skipped (no wheels)"
  assert rows["authors"]["status"] == "ok"
  assert rows["authors"]["ms_per_step"] == 50.0 and rows["authors"]["images_per_s"] == 40.0
  assert rows["authors_small_batch"]["status"].startswith("timed out")
  assert rows["authors_small_batch"]["images_per_s"] is None
  assert "===== " in (tmp_path / "report.log").read_text()


def test_ratio_is_taken_against_the_authors_at_the_same_batch_and_size():
  def row(part, batch, images_per_s):
    return {"part": part, "batch": batch, "size": 128, "images_per_s": images_per_s,
            "ratio_to_authors": None}

  rows = [row("authors", 10, 20.0), row("authors_small_batch", 3, 9.0),
          row("ours", 10, 70.0), row("ours_float32", 10, None)]
  kinds = {"authors": "authors", "authors_small_batch": "authors", "ours": "ours",
           "ours_float32": "ours"}
  gpu_report.add_ratios(rows, kinds)
  assert rows[2]["ratio_to_authors"] == 3.5
  assert rows[3]["ratio_to_authors"] is None  # a failed part has no ratio


def test_a_part_that_exits_zero_without_figures_counts_as_failed():
  part = gpu_report.Part("ours", "ours", ["python"], 0.1, 10, 128)
  assert gpu_report.make_row(part, "ok", 1.0, "", None)["status"] == "failed (no figures)"
