"""Training-loss curves of the precision study: each quantised arm against the full-precision one, paired by seed.

    python docs/studies/precision_cpu/loss_curves.py runs/studies/precision_cpu docs/studies/precision_cpu
    python docs/studies/precision_cpu/loss_curves.py runs/studies/precision docs/studies/precision bf16   # GPU

Reads ``<sweep>/<arm>/seed<S>/metrics.csv`` (``train/loss`` at every logged step), smooths each curve with a
centred moving average over ``WINDOW`` logged points, and reports per arm and seed the relative difference
``(arm - baseline) / baseline`` of the smoothed curves: its largest absolute value over the run (after the first
``SKIP`` logged points, where the loss falls by an order of magnitude in a few steps) and its mean over the last
quarter of the run; then the mean over seeds with a 95% t interval. Writes ``loss_curves.json`` and
``loss_curves.png`` (mean curve per arm, and the per-seed relative differences) into the output directory.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

WINDOW, SKIP = 5, 4


def curve(run: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(run / "metrics.csv") as f:
        rows = [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(f) if r.get("train/loss")]
    steps, loss = np.array([s for s, _ in rows]), np.array([v for _, v in rows])
    return steps, loss


def smooth(values: np.ndarray) -> np.ndarray:
    pad = WINDOW // 2
    padded = np.pad(values, pad, mode="edge")
    return np.convolve(padded, np.ones(WINDOW) / WINDOW, mode="valid")


def interval(values: list[float]) -> tuple[float, float]:
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, float("nan")
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values)))


def main(sweep: Path, out: Path, baseline: str = "fp32") -> None:
    def trained(run: Path) -> bool:  # the sweep's record: fit finished (a run still training has a shorter curve)
        record = run / "sweep_run.json"
        return record.is_file() and json.loads(record.read_text()).get("status") in ("trained", "done")

    arms = sorted(p.name for p in sweep.iterdir() if p.is_dir() and any(map(trained, p.glob("seed*"))))
    curves = {arm: {int(run.name[4:]): curve(run) for run in sorted((sweep / arm).glob("seed*")) if trained(run)}
              for arm in arms}
    result: dict = {"baseline": baseline, "window": WINDOW, "skip_points": SKIP, "arms": {}}
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for arm in arms:
        seeds = sorted(curves[arm])
        steps = curves[arm][seeds[0]][0]
        mean_loss = np.mean([smooth(curves[arm][s][1]) for s in seeds], axis=0)
        left.plot(steps, mean_loss, label=f"{arm} (mean of {len(seeds)} seeds)")
        if arm == baseline:
            continue
        per_seed = {}
        for s in [s for s in seeds if s in curves[baseline]]:
            base_steps, base = curves[baseline][s]
            arm_steps, loss = curves[arm][s]
            assert list(base_steps) == list(arm_steps), f"{arm} seed {s}: logged steps differ from {baseline}'s"
            rel = (smooth(loss) - smooth(base)) / smooth(base)
            tail = rel[-max(1, len(rel) // 4):]
            per_seed[s] = {"max_abs_rel": float(np.max(np.abs(rel[SKIP:]))), "last_quarter_rel": float(np.mean(tail))}
            right.plot(arm_steps[SKIP:], 100 * rel[SKIP:], label=f"{arm} seed {s}")
        result["arms"][arm] = {
            "seeds": per_seed,
            "max_abs_rel": interval([v["max_abs_rel"] for v in per_seed.values()]),
            "last_quarter_rel": interval([v["last_quarter_rel"] for v in per_seed.values()]),
        }
    # A scale for the differences above: the baseline against itself under another seed (another data order and
    # initialisation, same precision), the same statistics; what "as different as another run" looks like.
    base_seeds = sorted(curves.get(baseline, {}))
    scale = {}
    for i, s in enumerate(base_seeds if len(base_seeds) > 1 else []):
        other = base_seeds[(i + 1) % len(base_seeds)]
        rel = (smooth(curves[baseline][other][1]) - smooth(curves[baseline][s][1])) / smooth(curves[baseline][s][1])
        scale[f"{other}-{s}"] = {"max_abs_rel": float(np.max(np.abs(rel[SKIP:]))),
                                 "last_quarter_rel": float(np.mean(rel[-max(1, len(rel) // 4):]))}
    if scale:
        result["baseline_other_seed"] = {"pairs": scale,
                                         "max_abs_rel": interval([v["max_abs_rel"] for v in scale.values()]),
                                         "last_quarter_rel": interval([v["last_quarter_rel"] for v in scale.values()])}
    left.set(xlabel="optimizer step", ylabel="training loss (log scale)", yscale="log",
             title=f"training loss, moving average of {WINDOW} logged points")
    right.axhline(0, color="black", lw=0.8)
    for bound in (2, -2):
        right.axhline(bound, color="grey", lw=0.8, ls="--", label="±2%" if bound > 0 else None)
    right.set(xlabel="optimizer step", ylabel=f"(arm - {baseline}) / {baseline}, % (smoothed)",
              title=f"relative difference to {baseline}, paired by seed")
    left.legend(fontsize=8)
    right.legend(fontsize=7)
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "loss_curves.png", dpi=120)
    (out / "loss_curves.json").write_text(json.dumps(result, indent=2) + "\n")
    for arm, r in result["arms"].items():
        (m1, h1), (m2, h2) = r["max_abs_rel"], r["last_quarter_rel"]
        print(f"{arm}: largest |relative difference| {100 * m1:.1f} ± {100 * h1:.1f}%, "
              f"last quarter {100 * m2:+.1f} ± {100 * h2:.1f}% (per seed: "
              + ", ".join(f"{s}: {100 * v['max_abs_rel']:.1f}% / {100 * v['last_quarter_rel']:+.1f}%"
                          for s, v in r["seeds"].items()) + ")")
    if "baseline_other_seed" in result:
        r = result["baseline_other_seed"]
        (m1, h1), (m2, h2) = r["max_abs_rel"], r["last_quarter_rel"]
        print(f"{baseline} seed against {baseline} another seed: largest |relative difference| {100 * m1:.1f} ± "
              f"{100 * h1:.1f}%, last quarter {100 * m2:+.1f} ± {100 * h2:.1f}% (pairs: "
              + ", ".join(f"{k}: {100 * v['max_abs_rel']:.1f}% / {100 * v['last_quarter_rel']:+.1f}%"
                          for k, v in r["pairs"].items()) + ")")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:4])   # third argument: the baseline arm (default fp32)
