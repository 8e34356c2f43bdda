"""Keeps the end-to-end benchmark working; timings are never asserted."""
import json

from salrt import bench


def test_quick_benchmark_reports_every_path(tmp_path):
    report = bench.benchmark("resnet18", batches=(1,), backends=("eager", "torchscript"), rounds=2, warmup=1,
                             cache=tmp_path / "cache", progress=lambda message: None)
    bench.save(report, tmp_path / "bench.json", tmp_path / "bench.png")
    rows = {r["backend"]: r for r in json.loads((tmp_path / "bench.json").read_text())["results"]}
    assert set(rows) == {"naive", "forward", "eager", "torchscript"}
    assert rows["naive"]["speedup_vs_naive"] == 1.0 and rows["forward"]["cost_vs_forward"] == 1.0
    assert all(r["p50_ms"] > 0 and r["gflops"] > 0 and 0 < r["peak_fraction"] < 1.5 for r in rows.values())
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "torchscript" in bench.table(report)
