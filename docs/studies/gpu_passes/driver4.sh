# fifth pass (issue 18): guards' 17 missing runs and chance's 15 short runs at once; chance's 3 long_64k runs
# (4x the steps: the critical path) as soon as their training set is drawn. rank_data is started by hand if time is left.
cd /tmp/repo
source s/env.sh; export PYTHONPATH=/tmp/site:/tmp/repo
S="--gpus 0 --threads-per-job 1 --status-every 120"
mmpeft sweep docs/studies/chance.yaml --only demo no_vision_adapter tokens_49 res_320 vision_lora_all --runs-per-gpu 8 --jobs 8 $S > /tmp/chance.log 2>&1 &
mmpeft sweep docs/studies/guards.yaml --runs-per-gpu 8 --jobs 8 $S > /tmp/guards.log 2>&1 &
( while [ ! -f /tmp/data.done ]; do sleep 5; done
  mmpeft sweep docs/studies/chance.yaml --only long_64k --runs-per-gpu 3 --jobs 3 $S > /tmp/chance_long.log 2>&1 ) &
wait
date +%s > /tmp/driver.end
