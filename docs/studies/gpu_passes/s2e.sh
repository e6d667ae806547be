# next pass, second call (after s1.sh): rank_data's 27 runs, chance's long_8k (3 runs of 1,200 steps) and resampler_9; chance's
# 18 finished runs are unpacked first, so its sweep skips them and its report covers all seven cases; see driver5.sh
source .gpu/s/towers.sh
rm -rf /tmp/repo && mkdir /tmp/repo && cp -r mmpeft docs data_prep pyproject.toml /tmp/repo/ && cp -r .gpu/s /tmp/repo/s
tar xzf docs/studies/chance/done_runs.tgz -C /tmp/repo
cd /tmp/repo && export PYTHONPATH=/tmp/site:/tmp/repo
( for n in 8k:2000 2k:500 1k:250; do python3 data_prep/make_synthetic_shapes.py --out runs/studies/n${n%:*} --seed 0 --train-scenes ${n#*:} --eval-scenes 100 --questions-per-scene 3 --eval-per-type 60 > /tmp/data_${n%:*}.log 2>&1 & done; wait; touch /tmp/data.done ) &
python3 - <<'PY' 2>&1 | grep -v -i -E "warn|it/s"
from mmpeft.apps.demo_data import prepare_data
from mmpeft import zoo
print(prepare_data(zoo.cache_root() / "demo-data", quick=False, seed=0))
from mmpeft.towers import LLMTower
LLMTower(name="zoo:smollm2-135m-instruct")
PY
echo "setup $(( $(date +%s) - T0 )) s"; which mmpeft
setsid nohup bash s/driver5.sh > /tmp/driver.log 2>&1 < /dev/null &
sleep 2; bash s/watch.sh $(( 575 - ($(date +%s) - T0) )) rank_data chance
