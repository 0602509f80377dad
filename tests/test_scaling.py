"""minigpt.tools.scaling: the power-law fit recovers a known law, and the report reads a sweep's
metrics.json files."""

import json

import numpy as np
import pytest

from minigpt.tools import sweep_report
from minigpt.tools.scaling import fit_power_law


def test_the_fit_recovers_a_known_law():
    n = np.geomspace(1e4, 1e7, 8)
    loss = 5.0 * n**-0.3 + 1.2
    law = fit_power_law(n, loss)
    assert law.alpha == pytest.approx(0.3, rel=0.01)
    assert law.c == pytest.approx(1.2, abs=0.01) and law.rms < 1e-3
    with pytest.raises(ValueError, match="at least 3 runs"):
        fit_power_law([1e4, 1e5], [2.0, 1.5])


def test_the_report_fits_the_sweeps_final_val_bpb(tmp_path, capsys):
    for job, n in enumerate([2e4, 8e4, 3e5, 1.2e6]):
        (tmp_path / str(job)).mkdir()
        metrics = {
            "status": "done",
            "final_val_bpb": 3.0 * n**-0.25 + 1.5,
            "final_val_loss": 1.0,
            "best_val_loss": 1.0,
            "non_embedding_parameters": int(n),
            "training_flops": 6 * n * 1.2e6,
        }
        (tmp_path / str(job) / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "4").mkdir()  # jobs that did not finish are left out, and named
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "metrics.json").write_text(json.dumps({"status": "interrupted"}))
    assert sweep_report.main([str(tmp_path), "--scaling"]) == 0
    out = capsys.readouterr().out
    assert "warning: 2 job(s) left out of the fit: job 4: no metrics.json" in out
    assert "job 5: interrupted" in out
    assert (tmp_path / "scaling.png").stat().st_size > 0
    text = (tmp_path / "scaling.md").read_text()
    assert "N^-0.25" in text and text.count("\n| ") == 6  # header, separator, 4 runs
    assert "Left out of the fit (2 of 6 jobs):\n- job 4: no metrics.json" in text
