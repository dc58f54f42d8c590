/* Test input for the BTF/.BTF.ext parser: one of each kind clang 14 emits,
 * bitfields, a signed enum, global data, a subprogram and CO-RE relocations.
 * Rebuild: clang -g -O2 -target bpf -fno-ident -fdebug-prefix-map=$PWD=. -c kinds.bpf.c -o kinds.bpf.o */
typedef unsigned int u32;
typedef unsigned long long u64;

#define __tag(x) __attribute__((btf_decl_tag(x)))
#define __ttag(x) __attribute__((btf_type_tag(x)))
#define __core __attribute__((preserve_access_index))

enum color { RED = 1, GREEN = 2, BLUE = 0x7fffffff };
enum delta { MINUS = -5, PLUS = 5 };

struct flags {
	u32 a : 3;
	u32 b : 5;
	int c : 7;
	u64 wide;
	float f;
	double d;
} __tag("flags_tag");

union either { int i; char c[8]; };
struct fwd_only;
union fwd_union;

struct task_like {
	int pid;
	int tgid;
	struct flags fl;
	struct task_like *parent;
} __core;

struct holder {
	volatile const int * restrict p;
	int __ttag("user") *user_ptr;
	struct fwd_only *fo;
	union fwd_union *fu;
	union either e;
	enum color col;
	enum delta dl;
	int arr[4][3];
};

int counter = 3;
const volatile int config = 7;
char buffer[64];
struct holder holder_var;

static __attribute__((noinline)) int helper(struct task_like *t __tag("param_tag"))
{
	return t->tgid + t->fl.b;
}

__attribute__((section("tracepoint/sched/sched_process_exec"), used))
int prog(void *ctx)
{
	struct task_like *t = ctx;
	counter += helper(t) + t->parent->pid;
	buffer[3] = (char)holder_var.e.i + config;
	return __builtin_preserve_field_info(t->fl.b, 0) + RED;
}

char LICENSE[] __attribute__((section("license"), used)) = "GPL";
