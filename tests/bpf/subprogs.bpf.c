/* Subprograms: static and global functions in .text, nested calls, a static
 * function in the program's own section, and a callback passed to bpf_loop. */
#include "pybpf.h"

char LICENSE[] SEC("license") = "GPL";

__u64 total;
static __u64 leaf(__u64 x);

static __noinline __u64 leaf(__u64 x)
{
	return x * 3 + 1;
}

struct probe_ctx {
	long unused;
	long id;
} __attribute__((preserve_access_index));

static __noinline __u64 middle(__u64 x)
{
	/* a CO-RE relocation inside a subprogram: must travel with it */
	return leaf(x) + leaf(x + 1) + bpf_core_field_exists(((struct probe_ctx *)0)->id);
}

/* a static function living in the program's own section, not in .text */
static __noinline __attribute__((section("raw_tp/sys_enter"))) __u64 local_in_section(__u64 x)
{
	return x * 7 + total;
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
	total += local_in_section(1);
	return 0;
}
