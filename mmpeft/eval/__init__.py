"""Evaluation: VQA accuracy and caption metrics (as the reference scorers compute them), text forgetting probes on
the adapted model and its base, vision-tower drift, reports and plots."""
