"""``make bench``: the harness measured against itself — accuracy, overhead and headroom as ratios.

Run it with ``python -m benchmarks.bench``; see ``benchmarks/README.md``.
"""
