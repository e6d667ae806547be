# issue 17, fixed lengths: what LoRA dropout costs each system (the profile put ~15% of device time in compiled
# elementwise kernels that include dropout). Same batches, one process per dropout value; carry .gpu/q (torchao).
source .gpu/s/env.sh; export PYTHONPATH=/tmp/site:$PWD
for d in 0.05 0; do
  timeout 280 python3 benchmarks/train_throughput.py --shapes llama2-7b --batch 8 --text fixed --pack --compile \
    --lora-dropout $d --systems peer+compile,mmpeft,mmpeft:fp8 --out $OUT/fixed_dropout.jsonl 2>&1 | grep -E "^row|^\||ratio|not run"
done
