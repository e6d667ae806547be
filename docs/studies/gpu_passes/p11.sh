# twelfth pass, one call (one H200; carry .gpu/w .gpu/q .gpu/s; about 4 device minutes were left): int8 with
# FrozenInt8Linear (no input kept for the backward) at the Llama-3-8B variable-length row, fewer steps.
source .gpu/s/env.sh
rm -rf /tmp/repo && mkdir /tmp/repo && cp -r mmpeft benchmarks pyproject.toml /tmp/repo/ && cd /tmp/repo
export PYTHONPATH=/tmp/site:/tmp/repo CUDA_VISIBLE_DEVICES=0
timeout 190 python3 benchmarks/train_throughput.py --shapes llama3-8b --batch 16 --text variable --checkpointing \
  --pack --compile --steps 8 --warmup 3 --systems mmpeft:int8 --out $OUT/llama3_int8_frozen.jsonl > $OUT/int8.log 2>&1
grep -E "^\||^row|Error|error" $OUT/int8.log | tail -8
