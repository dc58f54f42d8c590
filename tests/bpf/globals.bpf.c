/* Global data of every kind: .rodata config, .data, .bss, custom .data.* and
 * .rodata.* sections, and a string literal (.rodata.str1.1). */
#include "pybpf.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 target_pid = 0;
const volatile __s16 threshold = -5;
const volatile __u64 flags_cfg = 7;
const volatile char prefix[8] = "abc";

__u64 counter = 42;
__u32 hits;
__u64 big_bss[4];

__u32 custom_data __attribute__((section(".data.custom"))) = 3;
const volatile __u32 custom_ro __attribute__((section(".rodata.custom"))) = 9;

SEC("tp/syscalls/sys_enter_getpid")
int use_globals(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;

	if (target_pid && pid != target_pid)
		return 0;
	if (threshold < 0)
		counter += flags_cfg;
	hits++;
	big_bss[pid & 3] += prefix[0];
	custom_data += custom_ro;
	bpf_trace_printk("pid %d\n", sizeof("pid %d\n"), pid);
	return 0;
}
