/* core_reloc.bpf.c - one program per CO-RE relocation family, compiled twice:
 * as is (the object under test) and with -DTARGET (only the target types, as
 * the BTF to relocate against: tests/objects/core_reloc.target.bpf.o).
 * The programs are never loaded: tests/test_core.py relocates them and checks
 * the patched instructions.  Results go to out[] so nothing is optimised out.
 */
#include "pybpf.h"
#include "core_types.h"

char LICENSE[] SEC("license") = "GPL";

#ifdef TARGET
/* anchors: make every target type appear in .BTF */
struct sample *t_sample;
struct node *t_node;
struct mt_same *t_mt_same;
struct mt_diff *t_mt_diff;
struct amb___x *t_amb_x;
struct amb___y *t_amb_y;
struct agree___x *t_agree_x;
struct agree___y *t_agree_y;
enum color t_color;
#else

__u64 out[64];

static __always_inline struct sample *get_sample(void)
{
	return (struct sample *)bpf_get_current_task();
}

/* direct loads and stores: LDX/STX offsets, load size changes */
SEC("tp/test/fields")
int fields(void *ctx)
{
	struct sample *s = get_sample();

	out[0] = s->a;
	out[1] = s->b;
	out[2] = s->usz;          /* u32 -> u16: the load shrinks */
	out[3] = s->in.y;         /* through a const typedef */
	out[4] = s->ux;           /* anonymous union, moved into an anonymous struct */
	out[5] = s->uy;
	out[6] = s->arr[2].y;     /* array of structs */
	out[7] = s->name[3];      /* char array */
	out[8] = s->tail[5];      /* flexible array */
	out[9] = s->col;
	s->cnt = 42;              /* STX */
	return 0;
}

/* a signed field that shrinks cannot be read by a narrower load: poisoned */
SEC("tp/test/signed_shrink")
int signed_shrink(void *ctx)
{
	struct sample *s = get_sample();

	out[10] = s->ssz;
	return 0;
}

/* field info builtins: ALU immediates */
SEC("tp/test/field_info")
int field_info(void *ctx)
{
	struct sample *s = get_sample();

	out[11] = bpf_core_field_offset(s->b);
	out[12] = bpf_core_field_size(s->name);
	out[13] = bpf_core_field_size(s->usz);
	out[14] = __builtin_preserve_field_info(s->a, BPF_FIELD_SIGNED);
	out[15] = __builtin_preserve_field_info(s->usz, BPF_FIELD_SIGNED);
	out[16] = bpf_core_field_exists(s->a);
	out[17] = bpf_core_field_offset(s[1].a);       /* root array index */
	out[18] = bpf_core_field_offset(s->arr[1]);    /* array element */
	out[19] = bpf_core_field_size(s->arr[1]);
	return 0;
}

/* bitfields: offset, size, shifts, signedness of the containing load */
SEC("tp/test/bitfields")
int bitfields(void *ctx)
{
	struct sample *s = get_sample();

	out[20] = CORE_READ_BITFIELD(s, bf_u);
	out[21] = CORE_READ_BITFIELD(s, bf_s);
	return 0;
}

/* a removed field, guarded: exists -> 0, the guarded access poisoned */
SEC("tp/test/missing")
int missing(void *ctx)
{
	struct sample *s = get_sample();

	if (bpf_core_field_exists(s->removed))
		out[22] = s->removed;
	return 0;
}

/* flavours: v2 matches the target's struct node, v1 does not */
SEC("tp/test/flavours")
int flavours(void *ctx)
{
	void *n = (void *)bpf_get_current_task();
	struct node___v1 *v1 = n;
	struct node___v2 *v2 = n;

	if (bpf_core_field_exists(v2->__parent))
		out[23] = (__u64)v2->__parent;
	if (bpf_core_field_exists(v1->parent))
		out[24] = (__u64)v1->parent;
	out[25] = bpf_core_field_offset(v2->name);
	return 0;
}

/* type info and type ids */
SEC("tp/test/types")
int types(void *ctx)
{
	out[26] = bpf_core_type_exists(struct sample);
	out[27] = bpf_core_type_exists(struct local_only);
	out[28] = bpf_core_type_size(struct sample);
	out[29] = bpf_core_type_size(struct local_only);
	out[30] = bpf_core_type_id_kernel(struct sample);
	out[31] = bpf_core_type_id_local(struct sample);
	/* clang 14 cannot emit TYPE_MATCHES (LLVM 15 can): the test turns
	 * these two TYPE_EXISTS records into TYPE_MATCHES ones */
	out[32] = bpf_core_type_exists(struct mt_same);
	out[33] = bpf_core_type_exists(struct mt_diff);
	out[34] = bpf_core_type_exists(struct mt_diff);
	out[35] = bpf_core_type_size(inner_t);
	out[36] = bpf_core_type_id_kernel(struct local_only);
	return 0;
}

/* enumerators: renumbered, negative, missing */
SEC("tp/test/enums")
int enums(void *ctx)
{
	out[37] = bpf_core_enum_value_exists(enum color, BLUE);
	out[38] = bpf_core_enum_value_exists(enum color, ORANGE);
	out[39] = bpf_core_enum_value(enum color, BLUE);
	out[40] = bpf_core_enum_value(enum color, GREEN);
	if (bpf_core_enum_value_exists(enum color, ORANGE))
		out[41] = bpf_core_enum_value(enum color, ORANGE);
	return 0;
}

/* two target flavours put z at different offsets: an ambiguity error */
SEC("tp/test/ambiguous")
int ambiguous(void *ctx)
{
	struct amb *p = (void *)bpf_get_current_task();

	out[42] = p->z;
	return 0;
}

/* two target flavours agree on k: fine */
SEC("tp/test/agreeing")
int agreeing(void *ctx)
{
	struct agree *p = (void *)bpf_get_current_task();

	out[43] = p->k;
	return 0;
}
#endif
