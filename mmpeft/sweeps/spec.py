"""A sweep file: named cases x a grid of options x seeds, each run an ordinary ``mmpeft fit`` (then ``mmpeft eval``).

``load_sweep(path)`` reads and checks the whole file before anything runs and expands it into ``RunSpec``s; any
problem is one ``ValueError`` naming the file, the key and the fix. The schema::

    name: methods                     # required: the sweep's name (recorded; mmpeft report shows it)
    description: LoRA vs DoRA ranks   # optional free text, recorded
    out: runs/sweeps/methods          # required: the sweep directory, relative to the current directory (as
                                      #   --run_dir is), not to this file
    configs: [trainer/gpu_bf16.yaml, model/demo.yaml, peft/demo.yaml]
                                      # --config files of every run, in order: packaged presets by name or your own
                                      #   files, resolved as `mmpeft fit` resolves them (from the current directory)
    args: ["--trainer.max_steps=600"] # more `mmpeft fit` options of every run (one option per item)
    seeds: [0, 1, 2]                  # default [0]; a run gets --seed_everything=S --data.seed=S
    cases:                            # optional named variants; each adds configs and/or args to the common ones
      - {name: lora_llm, configs: [peft/lora_llm.yaml]}
      - {name: dora, configs: [peft/lora_llm.yaml], args: ["--model.vlm.llm_adapter.method=dora"]}
    grid:                             # optional: fit option (without --) -> values; every combination, crossed
      model.vlm.llm_adapter.r: [4, 16]  #   with the cases
    eval:                             # optional: after fit, mmpeft eval --checkpoint RUN/checkpoints/last.ckpt
      configs: [eval/demo.yaml]       #   --config files of mmpeft eval
      args: ["--batch-size", "32"]    #   more mmpeft eval options
    baseline: lora_llm-r=16           # optional: the config id the report compares the others against

One run is (case, grid point, seed). Its config id joins the case name and the grid values, each option named by
the shortest tail of its dotted name that tells the grid's options apart (``dora-r=16``; ``r=16`` without cases;
``default`` with neither); characters other than letters, digits and ``._=+-`` become ``_``. Its run directory is
``<out>/<config id>/seed<S>``, an ordinary mmpeft run directory. Its fit command stacks, in order: the common
configs, the case's configs, the common args, the case's args, the grid values (``--OPTION=VALUE``, JSON for lists
and mappings), ``--seed_everything=S --data.seed=S`` and ``--run_dir``. Runs are ordered seed by seed (every config's
seed 0 first), so a sweep half done has whole seeds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmpeft.config_files import config_values, resolve_config

TOP_KEYS = ("name", "description", "out", "configs", "args", "seeds", "cases", "grid", "eval", "baseline")
CASE_KEYS = ("name", "configs", "args")
EVAL_KEYS = ("configs", "args")
# options the sweep sets itself for every run: giving them in the file would be silently overridden
SWEEP_FIT_OPTIONS = ("--run_dir", "--seed_everything", "--data.seed", "--ckpt_path")
SWEEP_EVAL_OPTIONS = ("--checkpoint", "--out")
SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")
MAX_ID = 96  # longer ids end in a hash: directory names stay far from the 255-byte limit


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep. ``fit_args`` / ``eval_args`` are ``mmpeft`` arguments (verb first); paths in them are
    relative to the directory the sweep was started from. Picklable: submitit jobs receive it."""

    sweep: str
    config: str  # the config id
    case: str | None
    overrides: dict[str, Any]  # grid option -> value
    seed: int
    run_dir: Path  # <out>/<config>/seed<seed>
    fit_args: list[str]
    eval_args: list[str] | None

    @property
    def key(self) -> str:
        """``config/seedS``: the run's directory inside the sweep directory, and its name in messages."""
        return f"{self.config}/seed{self.seed}"


@dataclass(frozen=True)
class Sweep:
    """A checked sweep file and its runs (``load_sweep``)."""

    name: str
    out: Path
    source: Path
    text: str  # the file as written, copied into the sweep directory
    runs: list[RunSpec]
    baseline: str | None = None
    description: str | None = None
    seeds: list[int] = field(default_factory=list)
    grid: dict[str, list[Any]] = field(default_factory=dict)
    cases: list[str] = field(default_factory=list)

    @property
    def config_ids(self) -> list[str]:
        return list(dict.fromkeys(run.config for run in self.runs))


def load_sweep(path: str | Path) -> Sweep:
    """Read, check and expand the sweep file ``path`` (module docstring).

    Raises:
        ValueError: naming the file and the key: unknown keys, wrong types, empty lists, duplicate case names,
            seeds or config ids, config files that do not exist, options the sweep sets itself, an unknown baseline.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"sweep file {path}: cannot read it ({error.strerror or error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"sweep file {path}: not valid YAML ({error})") from None
    return expand(data, path, text)


def expand(data: Any, source: Path, text: str = "") -> Sweep:
    """The ``Sweep`` of the parsed YAML ``data`` (``load_sweep``)."""
    where = f"sweep file {source}"
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping with keys {', '.join(TOP_KEYS)}; got {type(data).__name__}")
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; the keys are: {', '.join(TOP_KEYS)}")
    for key in ("name", "out"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(f"{where}: {key}: required, a non-empty string (got {data.get(key)!r})")
    for key in ("description", "baseline"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError(f"{where}: {key}: a string (got {data[key]!r})")
    configs = _configs(data.get("configs"), f"{where}: configs")
    args = _args(data.get("args"), f"{where}: args", SWEEP_FIT_OPTIONS)
    seeds = _seeds(data.get("seeds", [0]), f"{where}: seeds")
    cases = _cases(data.get("cases"), where)
    grid = _grid(data.get("grid"), where)
    evaluation = _eval(data.get("eval"), where)
    if not configs and not any(case["configs"] for case in cases):
        raise ValueError(f"{where}: configs: give the --config files of the runs (at least a trainer and a model)")

    out = Path(data["out"]).expanduser()
    short = _short_names(list(grid))
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
    configs_of: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for case in cases or [None]:
        for point in points:
            config = config_id(case and case["name"], {short[k]: v for k, v in point.items()})
            if config in configs_of:
                raise ValueError(f"{where}: two runs get the config id {config!r} ({_describe(*configs_of[config])} "
                                 f"and {_describe(case and case['name'], point)}); rename a case or change the grid "
                                 "values so that the ids differ")
            configs_of[config] = (case and case["name"], point)
    case_of = {case["name"]: case for case in cases}
    runs = []
    for seed in seeds:
        for config, (case_name, point) in configs_of.items():
            case = case_of.get(case_name, {"configs": [], "args": []})
            run_dir = out / config / f"seed{seed}"
            fit = ["fit"]
            for name in [*configs, *case["configs"]]:
                fit += ["--config", name]
            fit += [*args, *case["args"], *(f"--{k}={option_value(v)}" for k, v in point.items()),
                    f"--seed_everything={seed}", f"--data.seed={seed}", f"--run_dir={run_dir}"]
            evaluation_args = None
            if evaluation is not None:
                evaluation_args = ["eval", "--checkpoint", str(run_dir / "checkpoints" / "last.ckpt")]
                for name in evaluation["configs"]:
                    evaluation_args += ["--config", name]
                evaluation_args += evaluation["args"]
            runs.append(RunSpec(data["name"], config, case_name, dict(point), seed, run_dir, fit, evaluation_args))
    baseline = data.get("baseline")
    if baseline is not None and baseline not in configs_of:
        raise ValueError(f"{where}: baseline: {baseline!r} is not a config id of this sweep; the ids: "
                         f"{', '.join(configs_of)}")
    return Sweep(data["name"], out, source, text, runs, baseline, data.get("description"), seeds, grid,
                 [case["name"] for case in cases])


def config_id(case: str | None, values: dict[str, Any]) -> str:
    """``case-opt=value-...`` made filesystem-safe (module docstring); ``default`` when both are empty."""
    parts = ([case] if case else []) + [f"{name}={id_value(v)}" for name, v in values.items()]
    text = SAFE.sub("_", "-".join(parts)).lstrip(".-") or "default"
    if len(text) > MAX_ID:
        text = f"{text[:MAX_ID - 9]}~{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return text


def option_value(value: Any) -> str:
    """A grid value as a command-line option value: strings as they are, everything else as JSON (``true``,
    ``null``, ``[1, 2]``), which jsonargparse parses back to the same value."""
    return value if isinstance(value, str) else json.dumps(value)


def id_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _describe(case: str | None, point: dict[str, Any]) -> str:
    return ", ".join(([f"case {case!r}"] if case else []) + [f"{k}={option_value(v)}" for k, v in point.items()]) \
        or "the only config"


def _short_names(keys: list[str]) -> dict[str, str]:
    """Each grid option's shortest dotted tail that no other option of the grid ends with."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if not any(other != key and (other == tail or other.endswith("." + tail)) for other in keys):
                break
        out[key] = tail
    return out


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: a list of non-empty strings (got {value!r})")
    return value


def _configs(value: Any, where: str) -> list[str]:
    names = _strings(value, where)
    for i, name in enumerate(names):
        _check_config(name, f"{where}[{i}]")
    return names


def _check_config(name: str, where: str) -> None:
    try:
        resolve_config(name)
    except FileNotFoundError as error:
        raise ValueError(f"{where}: {error}") from None


def _args(value: Any, where: str, reserved: tuple[str, ...]) -> list[str]:
    args = _strings(value, where)
    for i, arg in enumerate(args):
        option = arg.split("=", 1)[0]
        if option in reserved:
            raise ValueError(f"{where}[{i}]: {option} is set by the sweep for every run ({', '.join(reserved)}); "
                             "remove it (seeds: the seeds key; the run directory: the out key)")
    for name in config_values(args):
        if not name.lstrip().startswith("{"):
            _check_config(name, f"{where}: --config {name}")
    return args


def _seeds(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: a non-empty list of integers (got {value!r})")
    for seed in value:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{where}: {seed!r} is not a non-negative integer; seeds are integers such as [0, 1, 2]")
    if len(set(value)) != len(value):
        raise ValueError(f"{where}: seed {next(s for s in value if value.count(s) > 1)} is listed twice")
    return value


def _cases(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: cases: a non-empty list of {{name, configs, args}} (got {value!r})")
    cases, names = [], set()
    for i, case in enumerate(value):
        at = f"{where}: cases[{i}]"
        if not isinstance(case, dict):
            raise ValueError(f"{at}: a mapping with keys {', '.join(CASE_KEYS)} (got {case!r})")
        unknown = [k for k in case if k not in CASE_KEYS]
        if unknown:
            raise ValueError(f"{at}: unknown key {unknown[0]!r}; a case has: {', '.join(CASE_KEYS)}")
        name = case.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{at}: name: required, a non-empty string (got {name!r})")
        if name in names:
            raise ValueError(f"{at}: name: {name!r} is the name of an earlier case; case names must be unique")
        names.add(name)
        cases.append({"name": name, "configs": _configs(case.get("configs"), f"{at}.configs"),
                      "args": _args(case.get("args"), f"{at}.args", SWEEP_FIT_OPTIONS)})
    return cases


def _grid(value: Any, where: str) -> dict[str, list[Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{where}: grid: a mapping of fit option -> list of values (got {value!r})")
    for key, values in value.items():
        at = f"{where}: grid.{key}"
        if not isinstance(key, str) or not key or key.startswith("-"):
            raise ValueError(f"{where}: grid: option {key!r}: write fit options without dashes "
                             "(model.lr.projector: [1.0e-4, 1.0e-3])")
        if f"--{key}" in SWEEP_FIT_OPTIONS or key in ("config", "c"):
            raise ValueError(f"{at}: not a grid option (configs: the cases key; seeds: the seeds key; the run "
                             "directory: the out key)")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{at}: a non-empty list of values (got {values!r})")
        seen = [option_value(v) for v in values]
        if len(set(seen)) != len(seen):
            raise ValueError(f"{at}: value {next(v for v in seen if seen.count(v) > 1)} is listed twice")
    return value


def _eval(value: Any, where: str) -> dict[str, list[str]] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: eval: a mapping with keys {', '.join(EVAL_KEYS)} (got {value!r})")
    unknown = [k for k in value if k not in EVAL_KEYS]
    if unknown:
        raise ValueError(f"{where}: eval: unknown key {unknown[0]!r}; eval has: {', '.join(EVAL_KEYS)}")
    out = {"configs": _configs(value.get("configs"), f"{where}: eval.configs"),
           "args": _args(value.get("args"), f"{where}: eval.args", SWEEP_EVAL_OPTIONS)}
    if not out["configs"] and not out["args"]:
        raise ValueError(f"{where}: eval: give configs (eval/demo.yaml) and/or args (--vqa SHARDS ...), or leave "
                         "eval out")
    return out
