# issue 17, fixed lengths, Llama-2-7B batch 8: where mmpeft trails the compiled peer. Args: dropout values (default
# 0; the sixth pass measured 0 against 0.05: 0.98x against 0.97x, so dropout is not the gap) and then systems. Two
# more steps of each system after its timed ones are profiled (torch.profiler, $OUT/prof/d<dropout>/<system>.txt:
# top operators; .kernels.json: every kernel's time; the per-category comparison is printed after the rows).
# Carry .gpu/q (torchao) for mmpeft:fp8.
source .gpu/s/env.sh; export PYTHONPATH=/tmp/site:$PWD
for d in ${1:-0}; do
  timeout 280 python3 benchmarks/train_throughput.py --shapes llama2-7b --batch 8 --text fixed --pack --compile \
    --lora-dropout $d --systems ${2:-peer+compile,mmpeft} --profile $OUT/prof/d$d --out $OUT/fixed_dropout.jsonl 2>&1 \
    | grep -E "^row|^\||ratio|not run|ms per step"
done
