# seventh pass, second call (after s1.sh): what the sixth pass left of rank_data (20 of 27 runs) and chance (long_8k's
# 3 runs of 1,200 steps, resampler_9 seed 0). The finished runs of both are unpacked first (the sweeps skip them);
# the jobs are driver5.sh's. Later calls: bash .gpu/s/watch.sh 560 rank_data chance
source .gpu/s/stage.sh docs/studies/chance/done_runs.tgz docs/studies/rank_data/done_runs.tgz 8k:2000 2k:500 1k:250
setsid nohup bash s/driver5.sh > /tmp/driver.log 2>&1 < /dev/null &
sleep 2; bash s/watch.sh $(( 575 - ($(date +%s) - T0) )) rank_data chance
