/* Subprograms: static and global functions in .text, nested calls, a static
 * function in the program's own section, and a callback passed to bpf_loop. */
#include "pybpf.h"

char LICENSE[] SEC("license") = "GPL";

__u64 total;

static __noinline __u64 leaf(__u64 x)
{
	return x * 3 + 1;
}

static __noinline __u64 middle(__u64 x)
{
	return leaf(x) + leaf(x + 1);
}

__noinline int global_helper(__u32 v)
{
	return (int)middle(v) & 0xff;
}

static int loop_cb(__u32 index, void *ctx)
{
	__u64 *sum = ctx;

	*sum += index;
	return 0;
}

SEC("tp/syscalls/sys_enter_getpid")
int entry_a(void *ctx)
{
	__u64 sum = 0;

	bpf_loop(4, loop_cb, &sum, 0);
	total += sum + middle(2);
	return 0;
}

SEC("tp/syscalls/sys_enter_getppid")
int entry_b(void *ctx)
{
	total += global_helper(5);
	return 0;
}

SEC("raw_tp/sys_enter")
int entry_c(void *ctx)
{
	total += 1;
	return 0;
}
