/* BTF-defined maps of several types: hash, array, percpu, LRU, ringbuf, perf
 * event array (max_entries 0 = one per CPU), pinned, and map-in-map with
 * initial slots. */
#include "pybpf.h"

char LICENSE[] SEC("license") = "GPL";

struct key_t {
	__u32 pid;
	__u32 tid;
};

struct val_t {
	__u64 count;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct key_t);
	__type(value, struct val_t);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__uint(key_size, 4);
	__uint(value_size, 8);
} sized SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pinned_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

struct inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 3);
	__type(key, __u32);
	__array(values, struct inner_map);
} outer SEC(".maps") = {
	.values = { [0] = &inner_a, [2] = &inner_b },
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_HASH);
		__uint(max_entries, 16);
		__type(key, __u32);
		__type(value, __u32);
	});
} outer_hash SEC(".maps");

SEC("tp/sched/sched_process_exec")
int use_maps(void *ctx)
{
	struct key_t k = {};
	struct val_t v = {};
	__u32 zero = 0;
	__u64 pt = bpf_get_current_pid_tgid();
	__u64 *p;
	void *inner;

	k.pid = pt >> 32;
	k.tid = (__u32)pt;
	bpf_map_update_elem(&counts, &k, &v, BPF_ANY);
	p = bpf_map_lookup_elem(&sized, &zero);
	if (p)
		(*p)++;
	p = bpf_map_lookup_elem(&percpu, &zero);
	if (p)
		(*p)++;
	bpf_map_update_elem(&pinned_lru, &pt, &zero, BPF_ANY);
	bpf_ringbuf_output(&events, &k, sizeof(k), 0);
	bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &k, sizeof(k));
	inner = bpf_map_lookup_elem(&outer, &zero);
	if (inner) {
		p = bpf_map_lookup_elem(inner, &zero);
		if (p)
			(*p)++;
	}
	inner = bpf_map_lookup_elem(&outer_hash, &zero);
	if (inner)
		bpf_map_delete_elem(inner, &zero);
	return 0;
}
