"""Benchmarks: the pipeline (watch -> pass -> hook) against a shell baseline; `python -m bench`.

Benchmarks are not tests: they measure and report, they assert nothing about time.
"""
