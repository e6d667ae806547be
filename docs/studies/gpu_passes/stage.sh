# sourced by a pass's second call (s2d.sh, s2e.sh): installs and towers (towers.sh), the repository copied to
# /tmp/repo with the finished runs of each TGZ unpacked (the sweeps skip them), the training sets NAME:SCENES... drawn in
# the background (/tmp/data.done when all exist), the demo data and the LLM tower prepared; ends in /tmp/repo.
# Usage: source .gpu/s/stage.sh TGZ... NAME:SCENES...
source .gpu/s/towers.sh
rm -rf /tmp/repo && mkdir /tmp/repo && cp -r mmpeft docs data_prep benchmarks pyproject.toml /tmp/repo/ && cp -r .gpu/s /tmp/repo/s
while [[ "$1" == *.tgz ]]; do tar xzf "$1" -C /tmp/repo; shift; done
cd /tmp/repo && export PYTHONPATH=/tmp/site:/tmp/repo
( for n in "$@"; do python3 data_prep/make_synthetic_shapes.py --out runs/studies/n${n%:*} --seed 0 --train-scenes ${n#*:} --eval-scenes 100 --questions-per-scene 3 --eval-per-type 60 > /tmp/data_${n%:*}.log 2>&1 & done; wait; touch /tmp/data.done ) &
python3 - <<'PY' 2>&1 | grep -v -i -E "warn|it/s"
from mmpeft.apps.demo_data import prepare_data
from mmpeft import zoo
print(prepare_data(zoo.cache_root() / "demo-data", quick=False, seed=0))
from mmpeft.towers import LLMTower
LLMTower(name="zoo:smollm2-135m-instruct")
PY
echo "setup $(( $(date +%s) - T0 )) s"; which mmpeft
