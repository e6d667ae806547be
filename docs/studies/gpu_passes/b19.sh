# issue 19: Llama-2-7B shapes, the GPU preset (packed rows, compiled layers, checkpointing), variable lengths with
# 20% text-only rows trained by replay + KL: one GPU, then DDP and FSDP on every GPU the machine has (nvidia-h200-x2: 2). Rows to $OUT.
source .gpu/s/env.sh; export PYTHONPATH=/tmp/site:$PWD
N=$(nvidia-smi -L | wc -l)
A="--shapes llama2-7b --batch 8 --text variable --text-len 256 --text-only-ratio 0.2 --guards replay,kl --pack --compile --gradient-checkpointing --steps 20 --warmup 8"
timeout 200 python3 benchmarks/distributed_throughput.py --devices 1 --strategy auto $A --out $OUT/dist_1.json 2>&1 | grep -E "^\||Error"
if [ "$N" -gt 1 ]; then for s in ddp fsdp; do
  timeout 280 python3 benchmarks/distributed_throughput.py --devices $N --strategy $s $A --out $OUT/dist_${N}_$s.json 2>&1 | grep -E "^\||Error"
done; fi
