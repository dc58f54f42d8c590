"""The tools built on the loader: inspect, load, classify, ps, syscalls."""
