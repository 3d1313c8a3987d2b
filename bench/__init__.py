"""Benchmarks of FitKart Sync (run with `python -m bench.run`)."""
