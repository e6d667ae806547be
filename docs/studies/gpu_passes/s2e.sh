# next pass, second call (after s1.sh): rank_data's 27 runs, chance's long_8k (3 runs of 1,200 steps) and resampler_9; chance's
# 18 finished runs are unpacked first, so its sweep skips them and its report covers all seven cases; see driver5.sh
source .gpu/s/stage.sh docs/studies/chance/done_runs.tgz 8k:2000 2k:500 1k:250
setsid nohup bash s/driver5.sh > /tmp/driver.log 2>&1 < /dev/null &
sleep 2; bash s/watch.sh $(( 575 - ($(date +%s) - T0) )) rank_data chance
