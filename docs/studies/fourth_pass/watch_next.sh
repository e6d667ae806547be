# watch.sh SECONDS: report progress every 60 s for SECONDS, then put the finished runs and reports under $OUT
END=$(( $(date +%s) + $1 ))
cd /tmp/repo; export PYTHONPATH=/tmp/site:/tmp/repo PATH=/tmp/site/bin:$PATH MMPEFT_CACHE=/tmp/mmcache HF_HUB_OFFLINE=1
prog() { for s in guards chance rank_data; do echo "$s: $(grep -l '"status": "done"' runs/studies/$s/*/seed*/sweep_run.json 2>/dev/null | wc -l) done, $(ls -d runs/studies/$s/*/seed* 2>/dev/null | wc -l) started"; done; uptime; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; }
while [ $(date +%s) -lt $(( END - 75 )) ] && [ ! -f /tmp/driver.end ]; do prog; sleep 60; done
prog; tail -n 5 /tmp/guards.log /tmp/chance.log /tmp/driver.log
for s in guards chance rank_data; do [ -d runs/studies/$s ] && { timeout 40 mmpeft report --sweep runs/studies/$s > $OUT/report_$s.txt 2>&1;
  tar czf $OUT/${s}_runs.tgz --exclude='*.ckpt' --exclude='checkpoints' runs/studies/$s; }; done
cp /tmp/guards.log /tmp/chance.log $OUT/ 2>/dev/null; ls -la $OUT
