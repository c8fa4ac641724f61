"""Probes of the CPU fast path (``jaxcnn/cpu/``), one choice each: ``python -m benchmarks.cpu.NAME``."""
