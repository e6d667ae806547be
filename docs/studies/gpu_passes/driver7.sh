# eighth pass (started by s2h.sh; results under /tmp/results, which watch.sh copies to each call's $OUT).
# Issue 19, on a machine with two GPUs: the FSDP row the seventh pass could not measure (with the one-GPU and DDP
# rows again, same call), then the 200-step agreement alone on idle GPUs (the seventh pass's shared the GPUs with
# 24 study runs and did not finish). Issue 17, on one GPU: the fixed-length profile (b17.sh), then int8 speed and
# the QLoRA peer at Llama-3-8B shapes (these need .gpu/q, which the third call installs).
cd /tmp/repo
source s/env.sh; export PYTHONPATH=/tmp/site:/tmp/repo
R=/tmp/results; mkdir -p $R
N=$(nvidia-smi -L | wc -l)
if [ "$N" -gt 1 ]; then
  A="--shapes llama2-7b --batch 8 --text variable --text-len 256 --text-only-ratio 0.2 --guards replay,kl --pack --compile --gradient-checkpointing --steps 20 --warmup 8"
  echo "b19 rows $(date +%T)"
  CUDA_VISIBLE_DEVICES=0 timeout 240 python3 benchmarks/distributed_throughput.py --devices 1 --strategy auto $A --out $R/dist_1.json > $R/dist_1.log 2>&1
  for s in ddp fsdp; do
    CUDA_VISIBLE_DEVICES=0,1 timeout 300 python3 benchmarks/distributed_throughput.py --devices 2 --strategy $s $A --out $R/dist_2_$s.json > $R/dist_2_$s.log 2>&1
  done
  echo "b19 agreement $(date +%T)"
  CUDA_VISIBLE_DEVICES=0,1 python3 benchmarks/ddp_agreement.py --accelerator gpu --devices 2 --batch 8 --steps 200 \
    --seeds 3 --workdir runs/ddp_agreement_gpu > $R/agreement.log 2>&1
  cp runs/ddp_agreement_gpu/ddp_agreement.json $R/ 2>/dev/null
  tar czf $R/agreement_runs.tgz --exclude='*.ckpt' --exclude='checkpoints' runs/ddp_agreement_gpu
fi
echo "b17 profile $(date +%T)"
export CUDA_VISIBLE_DEVICES=0
timeout 280 python3 benchmarks/train_throughput.py --shapes llama2-7b --batch 8 --text fixed --pack --compile \
  --lora-dropout 0 --systems peer+compile,mmpeft --profile $R/prof/d0 --out $R/fixed_dropout.jsonl > $R/b17.log 2>&1
while [ ! -f /tmp/site/.q ]; do sleep 5; done
echo "b17 int8 and QLoRA at Llama-3-8B $(date +%T)"
timeout 280 python3 benchmarks/train_throughput.py --shapes llama3-8b --batch 16 --text variable --checkpointing \
  --pack --compile --systems peer+compile,peer-qlora,mmpeft,mmpeft:nf4,mmpeft:int8 --out $R/llama3_quant.jsonl > $R/b17_quant.log 2>&1
echo "driver end $(date +%T)"
date +%s > /tmp/driver.end
