# watch.sh SECONDS [SWEEP...]: report progress every 60 s for SECONDS, then put the finished runs and reports of the
# named sweeps (default: guards methods, this pass's) under $OUT; the next pass: watch.sh 560 guards chance rank_data
END=$(( $(date +%s) + $1 )); shift; SWEEPS="${*:-guards methods}"
# a lapsed lease gives a bare machine: say so at once instead of watching nothing for SECONDS
[ -d /tmp/repo ] || { echo "fresh machine: no /tmp/repo (the lease lapsed; the sweeps are lost); start again with s1.sh"; exit 3; }
cd /tmp/repo; export PYTHONPATH=/tmp/site:/tmp/repo PATH=/tmp/site/bin:$PATH MMPEFT_CACHE=/tmp/mmcache HF_HUB_OFFLINE=1
prog() { for s in $SWEEPS; do echo "$s: $(grep -l '"status": "done"' runs/studies/$s/*/seed*/sweep_run.json 2>/dev/null | wc -l) done, $(ls -d runs/studies/$s/*/seed* 2>/dev/null | wc -l) started"; done; uptime; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  tail -n 1 /tmp/driver.log; ls runs/ddp_agreement_gpu/*.log 2>/dev/null | wc -l | sed 's/^/agreement logs: /'; }
while [ $(date +%s) -lt $(( END - 75 )) ] && [ ! -f /tmp/driver.end ]; do prog; sleep 60; done
prog; for s in $SWEEPS; do tail -n 5 /tmp/$s.log 2>/dev/null; done; tail -n 5 /tmp/driver.log
for s in $SWEEPS; do [ -d runs/studies/$s ] && { timeout 40 mmpeft report --sweep runs/studies/$s > $OUT/report_$s.txt 2>&1;
  tar czf $OUT/${s}_runs.tgz --exclude='*.ckpt' --exclude='checkpoints' runs/studies/$s; }; done
for s in $SWEEPS; do cp /tmp/$s.log $OUT/ 2>/dev/null; done; [ -d /tmp/results ] && cp -r /tmp/results/. $OUT/; ls -la $OUT
