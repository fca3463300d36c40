"""Benchmarks of the lab's training against plain PyTorch: `python -m bench` (see bench/run.py)."""
