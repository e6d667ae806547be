cd /tmp/repo
source s/env.sh; export PYTHONPATH=/tmp/site:/tmp/repo
mmpeft sweep docs/studies/methods.yaml --gpus 0 --runs-per-gpu 10 --jobs 10 --threads-per-job 1 --status-every 120 > /tmp/methods.log 2>&1 &
mmpeft sweep docs/studies/guards.yaml --gpus 0 --runs-per-gpu 5 --jobs 5 --threads-per-job 1 --status-every 120 > /tmp/guards.log 2>&1 &
wait
date +%s > /tmp/driver.end
