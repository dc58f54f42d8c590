/* Loads fine, but its tracepoint does not exist: attaching must fail with
 * a clear error naming it. */
#include "pybpf.h"

char LICENSE[] SEC("license") = "GPL";

SEC("tp/nosuch/event")
int on_nosuch(void *ctx)
{
	return 0;
}
