# thirteenth pass, first call (one H200; carry .gpu/w .gpu/q .gpu/s): issue 17's fixed-length Llama-2-7B row after
# the batch plan (no host syncs in mmpeft's packed training forward), profiled with the device's idle stretches
# and the host syncs of one step counted by line (--sync-debug), the compiled peer in the same process.
source .gpu/s/env.sh
rm -rf /tmp/repo && mkdir /tmp/repo && cp -r mmpeft benchmarks pyproject.toml /tmp/repo/ && cd /tmp/repo
export PYTHONPATH=/tmp/site:/tmp/repo CUDA_VISIBLE_DEVICES=0
python3 -c "import torch, transformers, torchao; print(torch.__version__, transformers.__version__, torchao.__version__)"
timeout ${T13:-420} python3 benchmarks/train_throughput.py --shapes llama2-7b --batch 8 --text fixed --pack --compile \
  --systems ${SYSTEMS:-peer+compile,mmpeft,mmpeft:fp8,mmpeft:fp8:uncached} --profile $OUT/prof --sync-debug --out $OUT/fixed.jsonl \
  > $OUT/fixed_llama2.log 2>&1
echo "rc $?"; grep -vE "Warning|warn\(" $OUT/fixed_llama2.log | tail -80
