"""benchmarks/gpu_check.sh, the one script a lent GPU machine runs, dry-run on the CPU: every step but the
CUDA-only ones runs on each submission, so the script cannot rot while no GPU is available."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["environment", "op_tests", "op_bandwidth", "correctness", "end_to_end"]


def test_gpu_check_runs_every_step_on_the_cpu(tmp_path):
    out = tmp_path / "check"
    result = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--quick", "--out", str(out)],
                            cwd=ROOT, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert {name: step["status"] for name, step in results["steps"].items()} == {name: "ok" for name in STEPS}
    assert results["steps"]["environment"]["op_kernel_for_device"] is True
    assert "passed" in results["steps"]["op_tests"]["summary"]
    bandwidth = results["steps"]["op_bandwidth"]["rows"]
    assert {row["dtype"] for row in bandwidth} == {"f32", "bf16"} and all(row["op_gbps"] > 0 for row in bandwidth)
    checked = {(row["dtype"], row["backend"]): row for row in results["steps"]["correctness"]["rows"]}
    assert set(checked) == {("fp32", "eager"), ("fp32", "torchscript"), ("fp32", "onnxruntime"),
                            ("bf16", "eager"), ("bf16", "torchscript")}  # bf16 has no ONNX (precision.SUPPORT)
    assert all(row["status"] == "verified" and row["median_rel_l2"] < 1e-4
               for (dtype, _), row in checked.items() if dtype == "fp32")
    assert all(row["median_rel_l2"] < 5e-2 for (dtype, _), row in checked.items() if dtype == "bf16")
    timed = {(row["backend"], row["dtype"]) for label in ("report", "reduced")
             for row in results["steps"]["end_to_end"][label]["results"]}
    assert {backend for backend, _ in timed} == {"naive", "forward", "eager", "torchscript", "onnxruntime"}
    assert ("torchscript", "bf16") in timed and ("onnxruntime", "bf16") not in timed
    assert [goal["goal"].split(" (")[0] for goal in results["goals"]] == [
        "fused op f32 / copy bandwidth", "fused op bf16 / copy bandwidth", "bf16 grad rel. L2 vs float64",
        "best salrt vs naive, N=1", "best salrt vs naive, N=32", "saliency / forward, N=32"]
    page = (out / "results.md").read_text()
    assert "| correctness | ok |" in page and "| goal | target | measured | met |" in page
    assert "== end_to_end: ok" in (out / "log.txt").read_text(), "the shell script keeps the whole log"
