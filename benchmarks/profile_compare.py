"""Where two systems' step time differs, kernel by kernel: the comparison behind ``train_throughput.py --profile``.

``train_throughput.py --profile DIR`` profiles two timed steps of each system and writes, beside the readable
``DIR/<system>.txt``, ``DIR/<system>.kernels.json``: ``{"steps": 2, "unit": "us", "device": "cuda"|"cpu",
"kernels": {NAME: [self time, calls]}}`` (device kernels on a GPU; CPU operators where there is no GPU). This
script groups the kernels into categories (matmul, attention, compiled Triton kernels, eager elementwise and
reductions, copies, communication, other) and prints per step, for each system, the milliseconds of each category
and, against the first system, the difference; then the kernels whose time differs most. So a ratio such as
"mmpeft 0.98x the compiled peer" becomes "X ms more in attention, Y ms less in matmuls".

    python benchmarks/profile_compare.py DIR [SYSTEM ...]    # default: every DIR/*.kernels.json, sorted by name
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# first match wins: attention kernels (flash, fmha) can contain "gemm"-like words, compiled kernels say "triton"
CATEGORIES = (
    ("attention", re.compile(r"flash|fmha|attention|attn|sdpa|dot_do_o", re.I)),  # dot_do_o: cuDNN backward prologue
    ("communication", re.compile(r"nccl|allreduce|all_reduce|reduce_scatter|all_gather|gloo", re.I)),
    ("matmul", re.compile(r"triton_tem_.*(mm|bmm|addmm)", re.I)),  # Triton matmul templates (max-autotune)
    ("compiled (Triton)", re.compile(r"triton", re.I)),  # fused kernels often name a copy among their ops
    ("copies", re.compile(r"memcpy|memset|copy_|_to_copy|contiguous", re.I)),
    ("matmul", re.compile(r"gemm|gemv|cutlass|nvjet|xmma|cublas|wgmma|matmul|\bmm\b|addmm|bmm|linear", re.I)),
    ("eager elementwise / reductions", re.compile(
        r"elementwise|vectorized|reduce|unrolled|index|scatter|gather|fill|cat|softmax|norm|dropout|bernoulli|mul|"
        r"add|sub|div|sum|mean|sqrt|exp|pow|neg|where|clamp|silu|gelu",
        re.I)),
)
OTHER = "other"


def category(kernel: str) -> str:
    """The category of a kernel (or CPU operator) name."""
    for name, pattern in CATEGORIES:
        if pattern.search(kernel):
            return name
    return OTHER


def kernel_table(events, device: str) -> dict[str, list[float]]:
    """``{name: [self time in us, calls]}`` from a profiler's ``key_averages()``: the device kernels on a GPU, else
    the CPU operators (self time, so nothing is counted twice)."""
    table: dict[str, list[float]] = {}
    for event in events:
        on_device = str(getattr(event, "device_type", "")).endswith("CUDA")
        if device == "cuda" and not on_device:
            continue
        if device == "cuda":
            time_us = getattr(event, "self_device_time_total", None)
            if time_us is None:  # older torch
                time_us = event.self_cuda_time_total
        else:
            time_us = event.self_cpu_time_total
        # user annotations (record_function ranges: ProfilerStep#N, Optimizer.step#AdamW.step, which under
        # Lightning spans forward and backward) are time ranges, not work: counting them would count steps twice
        if getattr(event, "is_user_annotation", False) or event.key.startswith("ProfilerStep"):
            continue
        if time_us > 0:
            entry = table.setdefault(event.key, [0.0, 0])
            entry[0] += float(time_us)
            entry[1] += int(event.count)
    return table


def device_idle(spans: list[tuple[str, bool, int, int]], steps: int, top: int = 12) -> dict:
    """The device's idle time within the profiled steps: ``spans`` are ``(name, on_device, start_ns, end_ns)``
    (``ProfilerStep#N`` ranges bound the steps; device kernels and copies are the work).

    Returns ``{"step_ms", "busy_ms", "idle_ms"}`` per step and ``"gaps"``: the ``top`` longest idle stretches as
    ``[ms, kernel before, kernel after]`` (what the device waited to be given: the kernel after).
    """
    bounds = [(a, b) for name, on_device, a, b in spans if not on_device and name.startswith("ProfilerStep")]
    if not bounds:
        return {}
    lo, hi = min(a for a, _ in bounds), max(b for _, b in bounds)
    work = sorted((max(a, lo), min(b, hi), name) for name, on_device, a, b in spans
                  if on_device and b > lo and a < hi and b > a)
    busy, gaps, cursor, before = 0, [], lo, "(step start)"
    for a, b, name in work:
        if a > cursor:
            gaps.append([(a - cursor) / 1e6, before, name])
        if b > cursor:
            busy += b - max(a, cursor)
            cursor, before = b, name
    if hi > cursor:
        gaps.append([(hi - cursor) / 1e6, before, "(step end)"])
    total = (hi - lo) / 1e6
    gaps.sort(key=lambda g: -g[0])
    return {"step_ms": total / steps, "busy_ms": busy / 1e6 / steps, "idle_ms": (total - busy / 1e6) / steps,
            "gaps": [[round(ms, 3), x[:90], y[:90]] for ms, x, y in gaps[:top]]}


def kineto_spans(profiler) -> list[tuple[str, bool, int, int]]:
    """``(name, on_device, start_ns, end_ns)`` of every event a finished ``torch.profiler.profile`` recorded."""
    out = []
    for e in profiler.profiler.kineto_results.events():
        # record_function ranges also appear on the device's timeline (Lightning's optimizer step spans the whole
        # step there): ranges, not work
        annotation = getattr(e, "is_user_annotation", lambda: False)() or e.name().startswith("ProfilerStep")
        on_device = str(e.device_type()).endswith("CUDA") and not annotation
        out.append((e.name(), on_device, e.start_ns(), e.start_ns() + e.duration_ns()))
    return out


def write_kernels(path: Path, events, device: str, steps: int, idle: dict | None = None) -> None:
    path.write_text(json.dumps({"steps": steps, "unit": "us", "device": device,
                                "kernels": kernel_table(events, device), "idle": idle or {}}, indent=1) + "\n")


def by_category(profile: dict) -> dict[str, float]:
    """Milliseconds per step of each category."""
    out: dict[str, float] = {}
    for kernel, (time_us, _) in profile["kernels"].items():
        out[category(kernel)] = out.get(category(kernel), 0.0) + time_us / 1000.0 / profile["steps"]
    return out


def compare(profiles: dict[str, dict], top: int = 15) -> str:
    """Markdown tables: ms per step by category for each system (and each minus the first), then the ``top``
    kernels by absolute difference between the first two systems."""
    names = list(profiles)
    cats = {name: by_category(p) for name, p in profiles.items()}
    order = [*dict.fromkeys(c for c, _ in CATEGORIES), OTHER]  # matmul is matched by two rules
    first = names[0]
    lines = ["| category (ms per step) | " + " | ".join(names) + " | "
             + " | ".join(f"{n} - {first}" for n in names[1:]) + " |",
             "| --- |" + " ---: |" * (2 * len(names) - 1)]
    for c in [*order, "total"]:
        values = [sum(cats[n].values()) if c == "total" else cats[n].get(c, 0.0) for n in names]
        if c != "total" and not any(values):
            continue
        lines.append(f"| {c} | " + " | ".join(f"{v:.1f}" for v in values) + " | "
                     + " | ".join(f"{v - values[0]:+.1f}" for v in values[1:]) + " |")
    idle = {n: p.get("idle") for n, p in profiles.items() if p.get("idle")}
    if idle:  # the wall time of the profiled steps against the device's work in them
        lines += ["", "| device over the profiled steps (ms per step) | step | busy | idle |",
                  "| --- | ---: | ---: | ---: |"]
        lines += [f"| {n} | {d['step_ms']:.1f} | {d['busy_ms']:.1f} | {d['idle_ms']:.1f} |" for n, d in idle.items()]
        for n, d in idle.items():
            lines += ["", f"| longest idle stretches of {n} (ms) | kernel before | kernel after |",
                      "| ---: | --- | --- |"]
            lines += [f"| {ms:.2f} | `{x}` | `{y}` |" for ms, x, y in d["gaps"]]
    if len(names) >= 2:
        a, b = (profiles[n]["kernels"] for n in names[:2])
        steps_a, steps_b = profiles[names[0]]["steps"], profiles[names[1]]["steps"]
        diff = {k: b.get(k, [0.0])[0] / 1000 / steps_b - a.get(k, [0.0])[0] / 1000 / steps_a for k in set(a) | set(b)}
        lines += ["", f"| kernel ({names[1]} - {names[0]}, ms per step) | category | difference |",
                  "| --- | --- | ---: |"]
        for k in sorted(diff, key=lambda k: -abs(diff[k]))[:top]:
            lines.append(f"| `{k[:90]}` | {category(k)} | {diff[k]:+.2f} |")
    return "\n".join(lines)


def load(directory: Path, systems: list[str] | None) -> dict[str, dict]:
    files = [directory / f"{s}.kernels.json" for s in systems] if systems else sorted(directory.glob("*.kernels.json"))
    missing = [str(f) for f in files if not f.is_file()]
    if missing or not files:
        sys.exit(f"profile_compare: no kernel table {', '.join(missing) or f'*.kernels.json in {directory}'}; "
                 "write them with train_throughput.py --profile DIR")
    return {f.name[: -len(".kernels.json")]: json.loads(f.read_text()) for f in files}


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    p.add_argument("directory", type=Path)
    p.add_argument("systems", nargs="*", help="file stems in DIRECTORY (the first is the reference)")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    print(compare(load(args.directory, args.systems or None), args.top))


if __name__ == "__main__":
    main()
