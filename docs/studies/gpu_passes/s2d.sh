# fifth pass, second call: installs, Fisher alone, then guards + chance (long_64k once its data is drawn); see driver4.sh
source .gpu/s/stage.sh docs/studies/guards_partial/done_runs.tgz 64k:16000 8k:2000 1k:250
timeout 200 mmpeft fisher --output runs/studies/fisher.safetensors --batches 50 --config trainer/gpu_bf16.yaml --config model/demo.yaml \
  --config peft/demo.yaml --config experiments/demo_kl.yaml --model.compile_llm_layers=false 2>&1 | grep -v Warn | tail -3
ls -la runs/studies; echo "fisher done $(( $(date +%s) - T0 )) s"
setsid nohup bash s/driver4.sh > /tmp/driver.log 2>&1 < /dev/null &
sleep 2; bash s/watch.sh $(( 575 - ($(date +%s) - T0) )) guards chance
