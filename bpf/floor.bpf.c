/* floor.bpf.c - empty programs on the hooks of syscalls.bpf.c: the
 * benchmark attaches them alone to measure the cost of the hook itself,
 * so the counting program's own cost is the difference. */
#include "pybpf.h"
#include "kernel_types.h"

char LICENSE[] SEC("license") = "GPL";

/* the raw tracepoint, as used by syscalls.bpf.c */
SEC("raw_tp/sys_enter")
int floor_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}

/* the classic tracepoint (the kernel copies the arguments into a record) */
SEC("tp/raw_syscalls/sys_enter")
int floor_tp(void *ctx)
{
	return 0;
}
