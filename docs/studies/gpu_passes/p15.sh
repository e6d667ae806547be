# thirteenth pass, last call (one H200; carry .gpu/w .gpu/q .gpu/s): the fixed-length Llama-2-7B row again at the
# final code (FP8 casts cached from fit start, stale-weight checks before each step), against the compiled peer.
source .gpu/s/env.sh
rm -rf /tmp/repo && mkdir /tmp/repo && cp -r mmpeft benchmarks pyproject.toml /tmp/repo/ && cd /tmp/repo
export PYTHONPATH=/tmp/site:/tmp/repo CUDA_VISIBLE_DEVICES=0
timeout 280 python3 benchmarks/train_throughput.py --shapes llama2-7b --batch 8 --text fixed --pack --compile \
  --systems ${SYSTEMS:-peer+compile,mmpeft,mmpeft:fp8} --out $OUT/rows.jsonl > $OUT/fixed_llama2_final.log 2>&1
echo "rc $?"; grep -E "^row|^ratio|host timeline" $OUT/fixed_llama2_final.log
