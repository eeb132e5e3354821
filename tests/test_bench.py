"""The benchmark harness (bench/): it runs end to end and writes well-formed files. Never a timing check.

The smoke run uses tiny sizes and one timed call: one op and one module, both modes, every provider here.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import cases, runner, timing  # noqa: E402
from bench.__main__ import main, parse_args, plan, report_order  # noqa: E402

META_KEYS = ("device", "device_name", "date", "git", "torch", "cuda", "triton", "threads", "dtypes", "suite",
             "timer", "argv", "wall_s")
ROW_KEYS = ("kind", "name", "shape", "dtype", "mode", "status", "providers", "bytes", "copy", "rotation_sets")
TIMED_KEYS = ("median_ms", "p20_ms", "p80_ms", "max_err", "speedup_vs_eager", "speedup_vs_compile")


@pytest.mark.parametrize("case", cases.OP_CASES, ids=lambda c: c.name)
def test_eager_formulation_matches_reference(case):
    """The eager rows time the same function as the fused ops (float64, tiny, fresh random inputs)."""
    dims = (2, 64, 5, 7)
    args = [a.requires_grad_(i in case.grads) for i, a in enumerate(case.make(dims, torch.float64, "cpu"))]
    eager = case.eager(*args)
    fused = case.fused(*args, backend="reference")
    g = torch.randn_like(fused)
    targets = [args[i] for i in case.grads]
    assert runner.max_rel_err([eager, *torch.autograd.grad(eager, targets, g)],
                              [fused, *torch.autograd.grad(fused, targets, g)]) < 1e-10


def test_byte_formulas():
    e, dims = 4, (2, 4, 3, 5)          # N = 120, P = 30, Q = 8, S = 64
    pool3 = cases.select(cases.OP_CASES, ["channel_pool(max,mean,std)"], "op")[0]
    assert pool3.bytes(dims, e, "fwd") == e * (120 + 3 * 30)
    assert pool3.bytes(dims, e, "fwd+bwd") == e * (120 + 3 * 30) + e * (3 * 30 + 2 * 120)
    strip = cases.select(cases.OP_CASES, ["ema_strip_pool"], "op")[0]
    assert strip.bytes(dims, e, "fwd") == e * (120 + 64)
    se = cases.select(cases.MODULE_CASES, ["SEBlock"], "module")[0]
    assert se.bytes(dims, e, "fwd", 10) == e * (2 * 120 + 10)
    assert cases.select(cases.MODULE_CASES, ["vgg16_se"], "module")[0].bytes(dims, e, "fwd", 10) is None


def test_helpers():
    assert timing.quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert timing.quantile([0.0, 10.0], 0.2) == pytest.approx(2.0)
    ref = torch.tensor([1.0, -2.0, 4.0])
    assert runner.max_rel_err([ref + 0.04], [ref]) == pytest.approx(0.01)
    assert runner.max_rel_err([torch.tensor([1.0, float("nan"), 4.0])], [ref]) == math.inf
    assert runner.max_rel_err([None, torch.zeros(2)], [None, None]) == 0.0
    assert 1 <= timing.rotation_count(2**40, "cpu") <= timing.rotation_count(1, "cpu") <= timing.MAX_SETS
    with pytest.raises(SystemExit, match="unknown op"):
        cases.select(cases.OP_CASES, ["no_such_op"], "op")


def test_plan_runs_size_by_size_and_reports_by_case():
    args = parse_args(["--op", "channel_squeeze", "--op", "ema_core", "--module", "SEBlock", "--shape", "2x32x4x4",
                       "--shape", "2x64x4x4", "--mode", "fwd"])
    rows = plan(args, torch.device("cpu"))
    assert [(c.name, d[1]) for _, c, d, _, _ in rows] == [
        ("channel_squeeze", 32), ("ema_core", 32), ("SEBlock", 32),
        ("channel_squeeze", 64), ("ema_core", 64), ("SEBlock", 64)]
    fake = [{"n": i} for i in range(len(rows))]
    assert [r["n"] for r in report_order(fake, rows)] == [0, 3, 1, 4, 2, 5]
    default = plan(parse_args([]), torch.device("cpu"))
    assert {c.name for _, c, _, _, _ in default} == {c.name for c in cases.OP_CASES + cases.MODULE_CASES}


def test_time_limit_skips_rows_and_still_writes_files(tmp_path, capsys):
    assert main(["--quick", "--op", "channel_squeeze", "--module", "SEBlock", "--time-limit", "0", "--tag", "My Goals",
                 "--device", "cpu", "--out", str(tmp_path), "--save", str(tmp_path / "saved")]) == 0
    (json_path,) = tmp_path.glob("*.json")
    assert json_path.name.endswith("_float32_my-goals.json")  # --tag names the files; the suite stays recorded
    doc = json.loads(json_path.read_text())
    assert doc["meta"]["suite"] == "quick" and doc["meta"]["tag"] == "My Goals"
    assert sorted(p.suffix for p in (tmp_path / "saved").iterdir()) == [".json", ".md"]  # no PNG: nothing timed
    assert doc["rows"] and all(r["status"] == "skipped" and r["providers"] == [] for r in doc["rows"])
    assert "skipped" in next(tmp_path.glob("*.md")).read_text()
    assert "rows skipped" in capsys.readouterr().out


def _finite_numbers(value, where=""):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (int, float)):
        assert math.isfinite(value), f"{where} is not finite"
    elif isinstance(value, dict):
        for k, v in value.items():
            _finite_numbers(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite_numbers(v, f"{where}[{i}]")


def test_smoke_run(tmp_path):
    """`python -m bench` on tiny sizes: one op, one module, both modes; the JSON and Markdown are well formed."""
    cmd = [sys.executable, "-m", "bench", "--quick", "--repeat", "1", "--op", "channel_pool(max,mean)", "--module",
           "SEBlock", "--shape", "2x32x8x8", "--device", "cpu", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[  1/4" in proc.stdout and "speedup vs eager" in proc.stdout

    (json_path,) = tmp_path.glob("bench_*.json")
    doc = json.loads(json_path.read_text())
    for key in META_KEYS:
        assert key in doc["meta"], key
    _finite_numbers(doc, "json")
    assert {"eager", "compile", "reference"} <= set(doc["providers"])
    rows = doc["rows"]
    assert [(r["kind"], r["mode"]) for r in rows] == [("op", "fwd"), ("op", "fwd+bwd")] + \
        ([("module", "fwd"), ("module", "fwd+bwd")])
    for row in rows:
        for key in ROW_KEYS:
            assert key in row, (row["name"], key)
        assert row["shape"] == [2, 32, 8, 8] and row["dtype"] == "float32" and row["bytes"] > 0
        names = [p["name"] for p in row["providers"]]
        assert names[:2] == ["eager", "compile"], names
        for p in row["providers"]:
            if row["kind"] == "op" or p["name"] in ("eager", "compile"):
                assert p["status"] == "ok", p
            if p["status"] != "ok":
                assert p["reason"], p
                continue
            for key in TIMED_KEYS:
                assert isinstance(p[key], (int, float)), (p["name"], key)
            assert p["p20_ms"] <= p["median_ms"] <= p["p80_ms"]
            assert p["max_err"] < 1e-4, p
            assert p["gbps"] > 0 and p["frac_copy"] > 0
        assert next(p for p in row["providers"] if p["name"] == "compile")["compile_s"] > 0

    md = json_path.with_suffix(".md").read_text()
    assert md.startswith("# fused_attn benchmark")
    table = [line for line in md.splitlines() if line.startswith("| op ") or line.startswith("| module ")]
    assert len(table) == sum(len(r["providers"]) for r in rows)
    assert all(line.count("|") == 15 for line in table)
    png = json_path.with_suffix(".png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not png.exists()
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
