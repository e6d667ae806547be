source .gpu/s/env.sh
mkdir -p /tmp/stage && cp .gpu/a2/g.part1 .gpu/a2/eff.pth.gz .gpu/a2/eff_init.py /tmp/stage/
inst .gpu/a2/*.whl && touch /tmp/site/.w
ls -la /tmp/stage
# every package a study run or report imports: the names missing here are what carry.sh must add
python3 -c "
import importlib.util as u
need = 'lightning webdataset submitit jsonargparse docstring_parser typeshed_client open_clip ftfy braceexpand peft timm transformers scipy matplotlib filelock yaml'.split()
print('missing:', [n for n in need if u.find_spec(n) is None] or 'none')"
nproc; nvidia-smi --query-gpu=name,memory.used --format=csv
