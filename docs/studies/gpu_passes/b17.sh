# issue 17, fixed lengths: what LoRA dropout costs each system (the 2026-12-04 profile put ~15% of device time in
# compiled elementwise kernels that include dropout). Args: dropout values (default 0; the 0.05 row of 2026-12-04
# is in benchmarks/results/train_throughput_h200_precision.jsonl) and then systems. Carry .gpu/q (torchao) for fp8.
source .gpu/s/env.sh; export PYTHONPATH=/tmp/site:$PWD
for d in ${1:-0}; do
  timeout 280 python3 benchmarks/train_throughput.py --shapes llama2-7b --batch 8 --text fixed --pack --compile \
    --lora-dropout $d --systems ${2:-peer+compile,mmpeft} --out $OUT/fixed_dropout.jsonl 2>&1 | grep -E "^row|^\||ratio|not run"
done
