"""Rows of docs/studies/first_pass/inloop.jsonl from the run directories the first GPU pass brought back.

    python docs/studies/first_pass/extract.py RUNS_ROOT > docs/studies/first_pass/inloop.jsonl

RUNS_ROOT holds runs/studies/<study>/<config>/seed<S>/ (metrics.csv, sweep_run.json, config.yaml). One row per run
whose fit reached its max_steps: the in-loop probes (ForgettingProbes: prose perplexity change of the adapted model
against its base in percent, with the probe's 95% interval over its tokens; validation VQA on 16 questions) at the
last probe step, the fit's wall time and mean tokens/s.
"""

import csv
import json
import sys
from pathlib import Path

import yaml


def main(root: Path) -> None:
    for metrics in sorted(root.glob("runs/studies/*/*/seed*/metrics.csv")):
        run = metrics.parent
        max_steps = yaml.safe_load((run / "config.yaml").read_text())["trainer"]["max_steps"]
        rows = list(csv.DictReader(metrics.open()))
        if not rows or max(int(r["step"]) for r in rows) < max_steps - 1:
            continue  # the fit was stopped before its last step
        last: dict[str, tuple[int, float]] = {}
        for r in rows:
            for key, value in r.items():
                if key and key.startswith("probe/") and value:
                    last[key] = (int(r["step"]), float(value))
        tokens = [float(r["tokens_per_s"]) for r in rows if r.get("tokens_per_s")]
        record = json.loads((run / "sweep_run.json").read_text())
        prose = "probe/ppl_prose/perplexity_delta_pct"
        print(json.dumps({
            "study": run.parts[-3], "config": run.parts[-2], "seed": int(run.name[4:]),
            "probe_step": last[prose][0], "prose_ppl_change_pct": round(last[prose][1], 3),
            "prose_ppl_change_pct_95": [round(last[prose + "_lo"][1], 3), round(last[prose + "_hi"][1], 3)],
            "val_vqa_16q": last["probe/vqa/overall"][1], "fit_s": round(record.get("fit_s") or 0),
            "tokens_per_s": round(sum(tokens[3:]) / max(len(tokens[3:]), 1)),
        }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
