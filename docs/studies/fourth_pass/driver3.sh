# next pass (issue 18): guards first, then chance and rank x data once their training sets exist
cd /tmp/repo
source s/env.sh; export PYTHONPATH=/tmp/site:/tmp/repo
mmpeft sweep docs/studies/guards.yaml --gpus 0 --runs-per-gpu 8 --jobs 8 --threads-per-job 1 --status-every 120 > /tmp/guards.log 2>&1 &
while [ ! -f /tmp/data.done ]; do sleep 5; done
mmpeft sweep docs/studies/chance.yaml --gpus 0 --runs-per-gpu 7 --jobs 7 --threads-per-job 1 --status-every 120 > /tmp/chance.log 2>&1 &
wait
date +%s > /tmp/driver.end
