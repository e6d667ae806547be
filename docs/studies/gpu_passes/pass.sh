# A one-GPU pass's first call (ninth to eleventh passes: pass.sh driver8.sh, driver9.sh, driver10.sh; carry .gpu/w
# .gpu/q .gpu/s): installs the pure-Python wheels and torchao + bitsandbytes, copies the repository to /tmp/repo,
# starts the driver DRIVER in its own process session and watches it.
# Later calls, back to back: O=$OUT; export OUT=/tmp/oN; mkdir -p $OUT; bash .gpu/s/watch.sh 555 none; tar czf $O/all.tgz -C $OUT .
T0=$(date +%s)
source .gpu/s/env.sh
rm -rf /tmp/repo && mkdir /tmp/repo && cp -r mmpeft benchmarks pyproject.toml /tmp/repo/ && cp -r .gpu/s /tmp/repo/s
cd /tmp/repo && export PYTHONPATH=/tmp/site:/tmp/repo
python3 -c "import torch, torchao, bitsandbytes; print(torch.__version__, torchao.__version__, bitsandbytes.__version__)" 2>&1 | tail -1
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
setsid nohup bash s/$1 > /tmp/driver.log 2>&1 < /dev/null &
sleep 2; bash s/watch.sh $(( 570 - ($(date +%s) - T0) )) none
