# ninth pass (one H200; started by pass.sh, results under /tmp/results, which watch.sh copies to each call's $OUT).
# Issue 17: both systems profiled at fixed lengths (where mmpeft trails the compiled peer), then int8 speed and the
# QLoRA peer at Llama-3-8B shapes; issue 19: the one-GPU row of the distributed benchmark on an otherwise idle machine.
cd /tmp/repo
source s/env.sh; export PYTHONPATH=/tmp/site:/tmp/repo CUDA_VISIBLE_DEVICES=0
R=/tmp/results; mkdir -p $R
echo "b17 profile $(date +%T)"
timeout 300 python3 benchmarks/train_throughput.py --shapes llama2-7b --batch 8 --text fixed --pack --compile \
  --lora-dropout 0 --systems peer+compile,mmpeft --profile $R/prof/d0 --out $R/fixed_profile.jsonl > $R/b17.log 2>&1
echo "b17 int8 and QLoRA at Llama-3-8B $(date +%T)"
timeout 420 python3 benchmarks/train_throughput.py --shapes llama3-8b --batch 16 --text variable --checkpointing \
  --pack --compile --systems peer+compile,peer-qlora,mmpeft,mmpeft:nf4,mmpeft:int8 --out $R/llama3_quant.jsonl \
  > $R/b17_quant.log 2>&1
echo "b19 one GPU $(date +%T)"
A="--shapes llama2-7b --batch 8 --text variable --text-len 256 --text-only-ratio 0.2 --guards replay,kl --pack --compile --gradient-checkpointing --steps 20 --warmup 8"
timeout 240 python3 benchmarks/distributed_throughput.py --devices 1 --strategy auto $A --out $R/dist_1.json > $R/dist_1.log 2>&1
echo "driver end $(date +%T)"
date +%s > /tmp/driver.end
