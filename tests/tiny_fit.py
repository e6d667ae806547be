"""The ``mmpeft fit`` command line of a short CLI run on tiny towers written to a test directory."""

from pathlib import Path

CONFIGS = ["trainer/cpu.yaml", "model/tiny.yaml", "data/tiny.yaml"]


def fit_args(towers: Path, run_dir: Path, *extra: str) -> list[str]:
    """``fit`` on the towers and shards ``save_tiny_towers(towers)`` wrote, logging every step, no validation."""
    args = ["fit"]
    for config in CONFIGS:
        args += ["--config", config]
    return args + [
        f"--model.vlm.llm.init_args.name={towers / 'llm'}",
        f"--model.vlm.vision.init_args.name=local-dir:{towers / 'open_clip'}",
        f"--data.train_shards={towers / 'data' / 'train'}",
        f"--data.text_shards={towers / 'data' / 'text'}",
        f"--run_dir={run_dir}", "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        "--trainer.limit_val_batches=0", *extra,
    ]
