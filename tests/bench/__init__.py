"""The benchmark (`make bench`, `python -m tests.bench.run`): figures printed, never asserted."""
