/* Compiles, but the verifier must reject it: a map value is dereferenced
 * without checking the lookup for NULL. */
#include "pybpf.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} values SEC(".maps");

SEC("tp/syscalls/sys_enter_getppid")
int unchecked_lookup(void *ctx)
{
	__u32 key = 1;
	__u64 *v = bpf_map_lookup_elem(&values, &key);

	return *v;	/* no NULL check: "invalid mem access 'map_value_or_null'" */
}
