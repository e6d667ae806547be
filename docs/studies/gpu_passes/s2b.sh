source .gpu/s/towers.sh
rm -rf /tmp/repo && mkdir /tmp/repo && cp -r mmpeft docs pyproject.toml /tmp/repo/ && cp -r .gpu/s /tmp/repo/s
tar xzf .gpu/d/done.tgz -C /tmp/repo
cd /tmp/repo && export PYTHONPATH=/tmp/site:/tmp/repo
python3 - <<'PY' 2>&1 | grep -v -i -E "warn|it/s"
from mmpeft.apps.demo_data import prepare_data
from mmpeft import zoo
print(prepare_data(zoo.cache_root() / "demo-data", quick=False, seed=0))
from mmpeft.towers import LLMTower
LLMTower(name="zoo:smollm2-135m-instruct")
PY
echo "setup $(( $(date +%s) - T0 )) s"; which mmpeft
timeout 100 mmpeft fisher --output runs/studies/fisher.safetensors --config trainer/gpu_bf16.yaml --config model/demo.yaml \
  --config peft/demo.yaml --config experiments/demo_kl.yaml --model.compile_llm_layers=false 2>&1 | grep -v Warn | tail -3
ls -la runs/studies; echo "fisher done $(( $(date +%s) - T0 )) s"
setsid nohup bash s/driver2.sh > /tmp/driver.log 2>&1 < /dev/null &
sleep 2; bash s/watch.sh $(( 575 - ($(date +%s) - T0) ))
