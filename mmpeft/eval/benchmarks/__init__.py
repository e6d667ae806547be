"""Scorers of published benchmarks (POPE, MME, MMBench, TextVQA, GQA, ScienceQA-IMG): pure functions, each
re-implemented from its reference's code at the commit its module cites."""
