#!/usr/bin/env bash
# The rows of docs/benchmarks.md's GPU training table: each line one process, peer and mmpeft on identical batches.
# Usage: bash benchmarks/train_throughput_suite.sh OUT.jsonl [ROW...]   (rows: l2-fixed, l2-fixed-ckpt, l2-var-ckpt,
# l3-fixed, l3-fixed-ckpt, l3-var-ckpt, vitb-fixed; default all)
set -u
out=${1:-train_throughput.jsonl}; shift || true
rows=${*:-l2-fixed l2-fixed-ckpt l2-var-ckpt l3-fixed l3-fixed-ckpt l3-var-ckpt vitb-fixed}
bench="python benchmarks/train_throughput.py --out $out --pack --compile --warmup 5 --steps 10"
for row in $rows; do
  case $row in
    l2-fixed)       $bench --shapes llama2-7b --batch 8 --text fixed ;;
    l2-fixed-ckpt)  $bench --shapes llama2-7b --batch 16 --text fixed --checkpointing ;;
    l2-var-ckpt)    $bench --shapes llama2-7b --batch 16 --text variable --checkpointing ;;
    l3-fixed)       $bench --shapes llama3-8b --batch 8 --text fixed ;;
    l3-fixed-ckpt)  $bench --shapes llama3-8b --batch 16 --text fixed --checkpointing ;;
    l3-var-ckpt)    $bench --shapes llama3-8b --batch 16 --text variable --checkpointing ;;
    vitb-fixed)     $bench --shapes vitb-llama2048x16 --batch 32 --text fixed ;;
    *) echo "unknown row $row" >&2; exit 2 ;;
  esac
done
