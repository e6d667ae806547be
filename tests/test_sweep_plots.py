"""The sweep report's plots draw no impossible value: a t interval (symmetric by construction) is clipped to the
range the metric can take (an accuracy to 0-100 %, a perplexity change above -100 % of the base's) in the scatter
plot's bars and the curves' bands; the tables keep the unclipped half-widths."""

import json

import matplotlib.axes
import pytest

from mmpeft.eval.sweep_collect import metric_range, metric_unit
from mmpeft.eval.sweep_plots import clipped_interval
from mmpeft.eval.sweep_report import report_sweep


def test_metric_ranges_by_unit():
    assert metric_range(metric_unit("vqa/overall")) == (0.0, 100.0)
    assert metric_range(metric_unit("vqa/qtype/is there a")) == (0.0, 100.0)
    assert metric_range(metric_unit("forgetting/ppl_change_pct")) == (-100.0, None)
    assert metric_range(metric_unit("text/mc/acc_change_pts")) == (-100.0, 100.0)
    assert metric_range(metric_unit("perf/tokens_per_s")) == (None, None)


def test_clipped_interval():
    assert clipped_interval(92.0, 13.0, (0.0, 100.0)) == pytest.approx((13.0, 8.0))
    assert clipped_interval(5.0, 13.0, (0.0, 100.0)) == pytest.approx((5.0, 13.0))
    assert clipped_interval(50.0, 10.0, (0.0, 100.0)) == (10.0, 10.0)
    assert clipped_interval(-90.0, 30.0, (-100.0, None)) == pytest.approx((10.0, 30.0))
    assert clipped_interval(7.0, None, (0.0, 100.0)) == (0.0, 0.0)
    assert clipped_interval(7.0, 3.0, (None, None)) == (3.0, 3.0)


def record(config, seed, vqa, ppl):
    return {"sweep": "s", "baseline": "a", "config": config, "seed": seed, "case": config, "overrides": {},
            "run_dir": f"{config}/seed{seed}", "status": "done", "counted": True, "reason": None,
            "metrics": {"vqa/overall": vqa, "forgetting/ppl_change_pct": ppl},
            "curves": {"probe/vqa/overall": [[0, 0.0], [10, vqa]],
                       "probe/ppl/perplexity_delta_pct": [[0, 0.0], [10, ppl]]}}


def test_bars_and_bands_stay_inside_the_metric_range(tmp_path, monkeypatch):
    # config "b": VQA 100, 100, 76 (mean 92, t half-width 34.4) and perplexity change -99, -95, -40
    rows = [record("a", s, v, p) for s, (v, p) in enumerate([(50.0, 10.0), (55.0, 12.0), (60.0, 14.0)])]
    rows += [record("b", s, v, p) for s, (v, p) in enumerate([(100.0, -99.0), (100.0, -95.0), (76.0, -40.0)])]
    rows += [record("c", 0, 70.0, 20.0)]  # one seed: no interval, so no bar at all
    jsonl = tmp_path / "runs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    drawn = {"y_high": [], "x_low": [], "band_high": [], "band_low": [], "no_bars": []}
    errorbar, fill_between = matplotlib.axes.Axes.errorbar, matplotlib.axes.Axes.fill_between

    def spy_errorbar(self, x, y, xerr=None, yerr=None, **kw):
        if yerr is None:
            assert xerr is None
            drawn["no_bars"].append((x, y))
        else:
            drawn["y_high"].append(y + yerr[1][0])
            drawn["x_low"].append(x - xerr[0][0])
        return errorbar(self, x, y, xerr=xerr, yerr=yerr, **kw)

    def spy_fill(self, x, low, high, **kw):
        drawn["band_high"] += list(high)
        drawn["band_low"] += list(low)
        return fill_between(self, x, low, high, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy_errorbar)
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", spy_fill)
    report = report_sweep(None, from_jsonl=jsonl)["report"]
    vqa_b = report["configs"]["b"]["metrics"]["vqa/overall"]
    assert vqa_b["interval"][1] > 120, "the table keeps the unclipped t interval"
    assert max(drawn["y_high"]) == pytest.approx(100.0) and min(drawn["x_low"]) == pytest.approx(-100.0)
    assert max(drawn["band_high"]) == pytest.approx(100.0) and min(drawn["band_low"]) == pytest.approx(-100.0)
    assert drawn["no_bars"] == [(20.0, 70.0)]
