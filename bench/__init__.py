"""Benchmarks for paytide: run with ``python -m bench``; they print figures, they assert nothing."""
