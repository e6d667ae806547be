# next pass (issue 18): chance's long_8k and resampler_9 first (4x the steps: the critical path), then rank_data's 27 runs once
# their training sets are drawn. Later calls: bash .gpu/s/watch.sh 560 rank_data chance
cd /tmp/repo
source s/env.sh; export PYTHONPATH=/tmp/site:/tmp/repo
S="--gpus 0 --threads-per-job 1 --status-every 120"
mmpeft sweep docs/studies/chance.yaml --only long_8k resampler_9 --runs-per-gpu 6 --jobs 6 $S > /tmp/chance.log 2>&1 &
( while [ ! -f /tmp/data.done ]; do sleep 5; done
  mmpeft sweep docs/studies/rank_data.yaml --runs-per-gpu 14 --jobs 14 $S > /tmp/rank_data.log 2>&1 ) &
wait
date +%s > /tmp/driver.end
