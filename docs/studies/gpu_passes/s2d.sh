# fifth pass, second call: installs, Fisher alone, then guards + chance (long_64k once its data is drawn); see driver4.sh
source .gpu/s/towers.sh
rm -rf /tmp/repo && mkdir /tmp/repo && cp -r mmpeft docs data_prep pyproject.toml /tmp/repo/ && cp -r .gpu/s /tmp/repo/s
tar xzf docs/studies/guards_partial/done_runs.tgz -C /tmp/repo
cd /tmp/repo && export PYTHONPATH=/tmp/site:/tmp/repo
( for n in 64k:16000 8k:2000 1k:250; do python3 data_prep/make_synthetic_shapes.py --out runs/studies/n${n%:*} --seed 0 --train-scenes ${n#*:} --eval-scenes 100 --questions-per-scene 3 --eval-per-type 60 > /tmp/data_${n%:*}.log 2>&1 & done; wait; touch /tmp/data.done ) &
python3 - <<'PY' 2>&1 | grep -v -i -E "warn|it/s"
from mmpeft.apps.demo_data import prepare_data
from mmpeft import zoo
print(prepare_data(zoo.cache_root() / "demo-data", quick=False, seed=0))
from mmpeft.towers import LLMTower
LLMTower(name="zoo:smollm2-135m-instruct")
PY
echo "setup $(( $(date +%s) - T0 )) s"; which mmpeft
timeout 200 mmpeft fisher --output runs/studies/fisher.safetensors --batches 50 --config trainer/gpu_bf16.yaml --config model/demo.yaml \
  --config peft/demo.yaml --config experiments/demo_kl.yaml --model.compile_llm_layers=false 2>&1 | grep -v Warn | tail -3
ls -la runs/studies; echo "fisher done $(( $(date +%s) - T0 )) s"
setsid nohup bash s/driver4.sh > /tmp/driver.log 2>&1 < /dev/null &
sleep 2; bash s/watch.sh $(( 575 - ($(date +%s) - T0) )) guards chance
