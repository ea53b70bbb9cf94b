"""Benchmarks: each module has run(quick) -> dict and markdown(results) -> str."""
