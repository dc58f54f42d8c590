"""The kernel layer: bpf(2), maps, program loading, attaching, event rings."""
