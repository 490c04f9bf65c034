"""bench.bf16_parity pairs fp32 and bf16 runs by seed (hand-computed numbers)."""
import json

import pytest

from bench.bf16_parity import main


def test_parity_pairs_the_runs_by_seed(tmp_path):
    pgd = {"fp32": {1: 0.60, 2: 0.62, 3: 0.64}, "bf16": {1: 0.61, 2: 0.63, 3: 0.66}}  # bf16 - fp32: 1, 1, 2 points
    for p, seeds in pgd.items():
        for s, v in seeds.items():
            (tmp_path / f"{p}-seed{s}").mkdir()
            m = {"test_pgd_acc": v, "test_clean_acc": 0.8, "test_n": 10000}
            (tmp_path / f"{p}-seed{s}" / "test_metrics.json").write_text(json.dumps({"best": m, "last": m}))
    (tmp_path / "bf16-seed4").mkdir()  # an unfinished run: no test_metrics.json, not read
    res = main([str(tmp_path), "--out", str(tmp_path / "parity.md")])
    d = res["best_PGD-20"]
    assert d["n"] == 3 and d["diff"] == pytest.approx(4 / 3)
    # sd of (1, 1, 2) = 0.577; t(0.975, 2) = 4.303: half-width 4.303 * 0.577 / sqrt(3) = 1.434
    assert d["high"] - d["diff"] == pytest.approx(1.434, abs=1e-3)
    assert res["best_clean"]["diff"] == pytest.approx(0.0)
    assert "| best | PGD-20 |" in (tmp_path / "parity.md").read_text()
