# seventh pass (nvidia-h200-x2, started by s2g.sh; results under /tmp/results, which watch.sh copies to each call's
# $OUT). First issue 19's throughput rows on otherwise idle GPUs (b19.sh's arguments: Llama-2-7B shapes, the GPU
# preset, variable lengths, 20% text-only rows under replay + KL): one GPU, then DDP and FSDP on both. Then, side by
# side on both GPUs: issue 18's missing runs (chance's long_8k x 3 and resampler_9 seed 0 on GPU 0, rank_data's 20
# on GPUs 0 and 1) and issue 19's 200-step agreement (2 GPUs x 8 rows against 1 GPU x 16, 3 seeds; a check of
# agreement, not of speed, so sharing the GPUs does not matter).
cd /tmp/repo
source s/env.sh; export PYTHONPATH=/tmp/site:/tmp/repo
R=/tmp/results; mkdir -p $R
A="--shapes llama2-7b --batch 8 --text variable --text-len 256 --text-only-ratio 0.2 --guards replay,kl --pack --compile --gradient-checkpointing --steps 20 --warmup 8"
echo "b19 one GPU $(date +%T)"
CUDA_VISIBLE_DEVICES=0 timeout 240 python3 benchmarks/distributed_throughput.py --devices 1 --strategy auto $A --out $R/dist_1.json > $R/dist_1.log 2>&1
for s in ddp fsdp; do
  echo "b19 $s $(date +%T)"
  CUDA_VISIBLE_DEVICES=0,1 timeout 300 python3 benchmarks/distributed_throughput.py --devices 2 --strategy $s $A --out $R/dist_2_$s.json > $R/dist_2_$s.log 2>&1
done
echo "sweeps and agreement $(date +%T)"
S="--threads-per-job 1 --status-every 120"
mmpeft sweep docs/studies/chance.yaml --only long_8k resampler_9 --gpus 0 --runs-per-gpu 4 --jobs 4 $S > /tmp/chance.log 2>&1 &
( while [ ! -f /tmp/data.done ]; do sleep 5; done
  mmpeft sweep docs/studies/rank_data.yaml --gpus 0,1 --runs-per-gpu 10 --jobs 20 $S > /tmp/rank_data.log 2>&1 ) &
( CUDA_VISIBLE_DEVICES=0,1 python3 benchmarks/ddp_agreement.py --accelerator gpu --devices 2 --batch 8 --steps 200 \
    --seeds 3 --workdir runs/ddp_agreement_gpu > $R/agreement.log 2>&1
  cp runs/ddp_agreement_gpu/ddp_agreement.json $R/ 2>/dev/null
  tar czf $R/agreement_runs.tgz --exclude='*.ckpt' --exclude='checkpoints' runs/ddp_agreement_gpu ) &
wait
echo "driver end $(date +%T)"
date +%s > /tmp/driver.end
