# eighth pass, second call (after s1.sh): stages the towers and the repository (no study runs are left), then starts
# driver7.sh in its own process session and watches it. The third call carries .gpu/q (torchao, bitsandbytes: its
# env.sh installs them; driver7.sh waits for them before issue 17's rows): bash .gpu/s/watch.sh 560 none
source .gpu/s/stage.sh
setsid nohup bash s/driver7.sh > /tmp/driver.log 2>&1 < /dev/null &
sleep 2; bash s/watch.sh $(( 575 - ($(date +%s) - T0) )) none
