# eleventh pass (one H200; started by pass.sh). Issue 17: int8 again after the fix (bitsandbytes'
# Int8Params had left GPU-resident weights in bf16), at the ninth pass's Llama-3-8B variable-length row.
cd /tmp/repo
source s/env.sh; export PYTHONPATH=/tmp/site:/tmp/repo CUDA_VISIBLE_DEVICES=0
R=/tmp/results; mkdir -p $R
echo "int8 at Llama-3-8B $(date +%T)"
timeout 420 python3 benchmarks/train_throughput.py --shapes llama3-8b --batch 16 --text variable --checkpointing \
  --pack --compile --systems mmpeft,mmpeft:int8,peer+compile --out $R/llama3_int8.jsonl > $R/int8.log 2>&1
echo "driver end $(date +%T)"
date +%s > /tmp/driver.end
