"""The attention kernels a packed batch can run, alone: time per forward + backward and agreement with the per-row
reference, at one LLM's attention shape.

``mmpeft.packing.varlen_attention`` runs packed rows of one length through dense causal SDPA (``dense``: torch picks
the kernel, cuDNN's on Hopper) and rows of mixed lengths through torch's variable-length flash attention
(``flash varlen``). This script times both on the same tensors and, where this torch and cuDNN run it, cuDNN's own
variable-length ("ragged") attention (``cudnn ragged``, ``torch.ops.aten._cudnn_attention_forward`` with cumulative
lengths, the call torch's nested-tensor SDPA makes), which mmpeft does not use: the row says what switching would
gain at variable lengths. Agreement: the largest absolute difference of output and input gradients against
per-row SDPA in float32. Timing: CUDA events, median of ``--iters`` after warm-up.

    python benchmarks/packed_attention.py --heads 32 --kv-heads 32 --head-dim 128 --rows 8 --length 1088
"""

from __future__ import annotations

import argparse
import statistics

import torch

from mmpeft import packing


def per_row_reference(q, k, v, cu, scale):
    """float32 per-row causal SDPA on ``[1, H, N, Dh]`` -> ``[1, N, Hq, Dh]``."""
    return packing._sdpa_per_row(q.float(), k.float(), v.float(), cu, scale)


def cudnn_ragged(q, k, v, cu, max_length, scale):
    """cuDNN's variable-length causal attention on ``[1, H, N, Dh]`` (equal query and key/value heads)."""
    res = torch.ops.aten._cudnn_attention_forward(q[0].transpose(0, 1), k[0].transpose(0, 1), v[0].transpose(0, 1),
                                                   None, cu, cu, max_length, max_length, True, 0.0, True, False,
                                                   scale=scale)
    return res[0].unsqueeze(0)


def kernels(rows_equal: bool):
    """name -> fn(q, k, v, cu, max_length, scale) -> [1, N, Hq, Dh]."""
    out = {"flash varlen": lambda q, k, v, cu, m, s: packing._flash_varlen(q, k, v, cu, m, s)}
    if rows_equal:
        out["dense"] = lambda q, k, v, cu, m, s: packing._sdpa_uniform(q, k, v, cu.shape[0] - 1, m, s)
    out["cudnn ragged"] = cudnn_ragged
    return out


def measure(fn, q, k, v, cu, max_length, scale, iters: int) -> tuple[float, float, float]:
    """(ms per forward + backward, max |out - ref|, max |grad - ref grad|)."""
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    ref_leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves, cu, max_length, scale)
    ref = per_row_reference(*ref_leaves, cu, scale)
    grad_out = torch.randn_like(ref)
    grads = torch.autograd.grad(out.float(), leaves, grad_out)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_out)
    out_err = (out.float() - ref).abs().max().item()
    grad_err = max((a.float() - b).abs().max().item() for a, b in zip(grads, ref_grads))
    times = []
    for i in range(iters + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        o = fn(*leaves, cu, max_length, scale)
        torch.autograd.grad(o, leaves, grad_out.to(o.dtype))
        end.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(start.elapsed_time(end))
    return statistics.median(times), out_err, grad_err


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=32)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--length", type=int, default=1088, help="tokens per row (576 image + 512 text: the benchmark's)")
    p.add_argument("--variable", action="store_true", help="row lengths drawn uniformly from [length/4, length]")
    p.add_argument("--iters", type=int, default=20)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("packed_attention.py measures CUDA kernels; this machine has no CUDA device")
    g = torch.Generator().manual_seed(0)
    lengths = ([int(x) for x in torch.randint(args.length // 4, args.length + 1, (args.rows,), generator=g)]
               if args.variable else [args.length] * args.rows)
    n = sum(lengths)
    cu = torch.zeros(args.rows + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    cu = cu.cuda()
    # the layout transformers hands the attention function: [1, N, H, Dh] projections viewed as [1, H, N, Dh]
    q, k, v = (torch.randn(1, n, h, args.head_dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
               for h in (args.heads, args.kv_heads, args.kv_heads))
    scale = args.head_dim ** -0.5
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}; "
          f"heads {args.heads}/{args.kv_heads} x {args.head_dim}, rows {args.rows}, lengths "
          f"{'variable' if args.variable else 'equal'} (max {max(lengths)}, {n} tokens)")
    print("| kernel | ms fwd+bwd | max abs err out | max abs err grads |")
    print("| --- | ---: | ---: | ---: |")
    for name, fn in kernels(not args.variable).items():
        try:
            ms, out_err, grad_err = measure(fn, q, k, v, cu, max(lengths), scale, args.iters)
            print(f"| {name} | {ms:.3f} | {out_err:.2e} | {grad_err:.2e} |")
        except Exception as e:  # a kernel this torch or cuDNN lacks: the row says so and the others still run
            print(f"| {name} | not run: {type(e).__name__}: {str(e).splitlines()[0][:120]} | | |")


if __name__ == "__main__":
    main()
