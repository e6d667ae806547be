"""``benchmarks/ddp_agreement.py``'s statistics (issue 19, item 2): per-arm intervals across seeds and the DDP minus
single differences paired by seed. The fits themselves are run by the script, not here."""


import numpy as np
import pytest


@pytest.fixture
def script(benchmark_script):
    return benchmark_script("ddp_agreement")


def test_interval_is_the_t_interval_across_seeds(script):
    mean, half = script.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / np.sqrt(3), rel=1e-6)  # t(0.975, 2) * s / sqrt(n)
    assert np.isnan(script.interval([5.0])[1])


def test_differences_are_paired_by_seed(script):
    # seed effects far larger than the DDP effect: paired, the DDP - single difference is exactly +0.1 every seed
    per_run = {}
    for seed, level in enumerate([1.0, 5.0, 9.0]):
        per_run[f"ddp_seed{seed}"] = {"final_loss": level + 0.1}
        per_run[f"single_seed{seed}"] = {"final_loss": level}
    row = script.summary(per_run, [0, 1, 2])["final_loss"]
    assert row["ddp_minus_single"][0] == pytest.approx(0.1) and row["ddp_minus_single"][1] == pytest.approx(0.0)
    assert row["single"] == pytest.approx(script.interval([1.0, 5.0, 9.0]))


def test_final_loss_is_the_last_quarter_mean_and_perplexity_change_in_percent(script):
    assert script.final_loss(np.arange(8.0)) == 6.5  # mean of steps 6 and 7
    flat = {"ppl_pydoc_heldout/adapted/perplexity": 15.0, "ppl_pydoc_heldout/base/perplexity": 12.0}
    assert script.perplexity_change(flat) == pytest.approx(25.0)
