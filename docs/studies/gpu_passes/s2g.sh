# seventh pass, second call, on nvidia-h200-x2 (after s1.sh): stages the towers, the repository (with the finished
# runs of chance and rank_data unpacked) and the rank x data training sets, then starts driver6.sh in its own
# process session (it outlives the call) and watches it. Later calls: bash .gpu/s/watch.sh 560 rank_data chance
source .gpu/s/stage.sh docs/studies/chance/done_runs.tgz docs/studies/rank_data/done_runs.tgz 8k:2000 2k:500 1k:250
setsid nohup bash s/driver6.sh > /tmp/driver.log 2>&1 < /dev/null &
sleep 2; bash s/watch.sh $(( 575 - ($(date +%s) - T0) )) rank_data chance
