/* Legacy struct bpf_map_def maps in the "maps" section, a kernel version
 * section, and several programs in one section. */
#include "pybpf.h"

struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

char LICENSE[] SEC("license") = "Dual BSD/GPL";
__u32 _version SEC("version") = 0x060c00;

struct bpf_map_def SEC("maps") legacy_hash = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 4,
	.value_size = 8,
	.max_entries = 128,
};

struct bpf_map_def SEC("maps") legacy_array = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = 4,
	.value_size = 4,
	.max_entries = 2,
	.map_flags = 0,
};

SEC("tracepoint/syscalls/sys_enter_getpid")
int first(void *ctx)
{
	__u32 k = 1;
	__u64 v = 2;

	bpf_map_update_elem(&legacy_hash, &k, &v, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int second(void *ctx)
{
	__u32 k = 0;
	__u32 *v = bpf_map_lookup_elem(&legacy_array, &k);

	if (v)
		(*v)++;
	return 1;
}
