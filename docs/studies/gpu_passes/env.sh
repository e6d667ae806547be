# sourced by each call: installs what this call carries (once per machine) and sets the environment
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH MMPEFT_CACHE=/tmp/mmcache
inst() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@"; }
if [ -d .gpu/w ] && [ ! -f /tmp/site/.w ]; then inst .gpu/w/*.whl && touch /tmp/site/.w; fi
if [ -d .gpu/q ] && [ ! -f /tmp/site/.q ]; then inst .gpu/q/*.whl && touch /tmp/site/.q; fi
mkdir -p /tmp/site/bin
printf '#!%s\nimport sys\nfrom mmpeft.apps.main import main\nsys.exit(main())\n' "$(command -v python3)" > /tmp/site/bin/mmpeft
chmod +x /tmp/site/bin/mmpeft
