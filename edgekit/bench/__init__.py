"""Side-by-side benchmarks (`edgekit bench`): being built."""
