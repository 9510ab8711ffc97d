"""Benchmarking inversion methods over datasets: datasets, a resumable SQLite store, a runner, a report."""
