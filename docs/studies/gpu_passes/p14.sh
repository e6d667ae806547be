# thirteenth pass, second call (one H200; carry .gpu/w .gpu/q .gpu/s): after the batch plan and the cached FP8
# weight casts, the fixed-length Llama-3-8B row and the variable-length Llama-2-7B row (batch 16, checkpointing),
# each against the compiled peer in its own process.
source .gpu/s/env.sh
rm -rf /tmp/repo && mkdir /tmp/repo && cp -r mmpeft benchmarks pyproject.toml /tmp/repo/ && cd /tmp/repo
export PYTHONPATH=/tmp/site:/tmp/repo CUDA_VISIBLE_DEVICES=0
timeout 290 python3 benchmarks/train_throughput.py --shapes llama3-8b --batch 8 --text fixed --pack --compile \
  --systems peer+compile,mmpeft,mmpeft:fp8,mmpeft:fp8:uncached --out $OUT/rows.jsonl > $OUT/fixed_llama3.log 2>&1
echo "rc $?"; grep -E "^row|^ratio|host timeline" $OUT/fixed_llama3.log
timeout 250 python3 benchmarks/train_throughput.py --shapes llama2-7b --batch 16 --text variable --checkpointing \
  --pack --compile --systems peer+compile,mmpeft,mmpeft:fp8 --out $OUT/rows.jsonl > $OUT/variable_llama2.log 2>&1
echo "rc $?"; grep -E "^row|^ratio|host timeline" $OUT/variable_llama2.log
