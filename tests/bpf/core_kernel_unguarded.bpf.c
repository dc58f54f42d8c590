/* core_kernel_unguarded.bpf.c - reads a kernfs_node field that no longer
 * exists ("parent", renamed "__parent" in 6.15) WITHOUT a
 * bpf_core_field_exists() guard: the poisoned instruction is reachable, so
 * the verifier must reject the program at that instruction.
 */
#include "pybpf.h"

#define __pai __attribute__((preserve_access_index))

struct kernfs_node___old { struct kernfs_node___old *parent; } __pai;

char LICENSE[] SEC("license") = "GPL";

SEC("tracepoint/sched/sched_process_exec")
int unguarded(void *ctx)
{
	struct kernfs_node___old *kn = (void *)bpf_get_current_task();

	return CORE_READ(kn, parent) != 0;
}
