# tenth pass (one H200; started by pass.sh). Issue 17: the packed attention kernels alone (equal rows:
# dense SDPA vs variable-length flash vs cuDNN ragged; mixed rows: flash vs cuDNN ragged), then the fixed-length rows
# with equal packed rows now on dense SDPA, Llama-2-7B and Llama-3-8B shapes, bf16 and fp8 against the compiled peer.
cd /tmp/repo
source s/env.sh; export PYTHONPATH=/tmp/site:/tmp/repo CUDA_VISIBLE_DEVICES=0
R=/tmp/results; mkdir -p $R
echo "attention kernels $(date +%T)"
{ python3 benchmarks/packed_attention.py --heads 32 --kv-heads 32 --rows 8 --length 1088
  python3 benchmarks/packed_attention.py --heads 32 --kv-heads 32 --rows 16 --length 1088 --variable
  python3 benchmarks/packed_attention.py --heads 32 --kv-heads 8 --rows 8 --length 1088; } > $R/attention.log 2>&1
echo "fixed Llama-2-7B $(date +%T)"
timeout 330 python3 benchmarks/train_throughput.py --shapes llama2-7b --batch 8 --text fixed --pack --compile \
  --systems peer+compile,mmpeft,mmpeft:fp8 --profile $R/prof --out $R/fixed_dense.jsonl > $R/fixed_llama2.log 2>&1
echo "fixed Llama-3-8B $(date +%T)"
timeout 330 python3 benchmarks/train_throughput.py --shapes llama3-8b --batch 8 --text fixed --pack --compile \
  --systems peer+compile,mmpeft,mmpeft:fp8 --out $R/fixed_dense.jsonl > $R/fixed_llama3.log 2>&1
echo "driver end $(date +%T)"
date +%s > /tmp/driver.end
