"""Benchmarks: each module's ``run(quick)`` returns rows of ours vs. a reference, measured in one run."""
