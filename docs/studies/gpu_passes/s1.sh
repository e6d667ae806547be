source .gpu/s/env.sh
mkdir -p /tmp/stage && cp .gpu/a2/g.part1 .gpu/a2/eff.pth.gz .gpu/a2/eff_init.py /tmp/stage/
inst .gpu/a2/*.whl && touch /tmp/site/.w
ls -la /tmp/stage; python3 -c "import lightning, webdataset, submitit; print('ok')"
nproc; nvidia-smi --query-gpu=name,memory.used --format=csv
