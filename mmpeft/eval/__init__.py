"""Evaluation: tasks behind one interface (``task.EvalTask``; VQA, captions, text probes, vision drift, lm-eval in
``tasks/``), built in Python or from YAML (``config``), run by one loop (``loop.evaluate``) that ``mmpeft eval``
(``run``), the ``ForgettingProbes`` training callback and Python share; the scorers (VQA accuracy and caption metrics
as the reference scorers compute them), reports and plots."""
