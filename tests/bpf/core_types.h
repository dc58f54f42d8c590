/* core_types.h - the types the CO-RE test objects relocate.
 *
 * Without TARGET: the "local" view a BPF program is compiled against.
 * With -DTARGET: the "target" (kernel) view that the tests relocate to:
 * fields moved, renamed, resized, bitfields shifted, a field removed, an
 * anonymous union moved into an anonymous struct, enumerators renumbered.
 * The expected values in tests/test_core.py are worked out by hand from the
 * TARGET definitions below (byte offsets are noted next to each member).
 */
#ifndef CORE_TYPES_H
#define CORE_TYPES_H

#define __pai __attribute__((preserve_access_index))

#ifndef TARGET
/* ------------------------------------------------------------ local -- */
enum color { RED = 0, GREEN = 1, BLUE = 2, ORANGE = 3 };

struct inner { int x; int y; } __pai;                 /* size 8 */
typedef struct inner inner_t;

struct sample {
	int a;                    /*   0 */
	long b;                   /*   8 */
	char name[16];            /*  16 */
	unsigned int usz;         /*  32 */
	int ssz;                  /*  36 */
	int removed;              /*  40 */
	const inner_t in;         /*  44 */
	union { int ux; long uy; };   /*  56 */
	unsigned int bf_u : 3;    /*  64, bits 512..514 */
	int bf_s : 5;             /*  64, bits 515..519 */
	enum color col;           /*  68 */
	struct inner arr[3];      /*  72 */
	int cnt;                  /*  96 */
	int tail[];               /* 100 */
} __pai;                          /* size 104 */

/* flavours: the v1 layout names the parent "parent", v2 "__parent" */
struct node___v1 { struct node___v1 *parent; const char *name; } __pai;
struct node___v2 { struct node___v2 *__parent; const char *name; } __pai;

struct local_only { int q; } __pai;
struct mt_same { int a; } __pai;          /* target has more members: matches */
struct mt_diff { int a; } __pai;          /* target's a is a long: exists, no match */
struct amb { int z; } __pai;              /* two target flavours disagree */
struct agree { int k; } __pai;            /* two target flavours agree */

#else
/* ----------------------------------------------------------- target -- */
enum color { BLUE = 7, RED = 1, GREEN = -5, PURPLE = 9 };   /* no ORANGE */

struct inner { long pad; int y; int x; } __pai;       /* size 16: y 8, x 12 */
typedef struct inner inner_t;

struct sample {
	long b;                   /*   0 */
	unsigned long long pad0;  /*   8 */
	int a;                    /*  16 */
	unsigned short usz;       /*  20 */
	short ssz;                /*  22 */
	char name[32];            /*  24 */
	const inner_t in;         /*  56 */
	struct {                  /*  72 */
		int pad1;         /*  72 */
		union { int ux; long uy; };   /*  80 */
	};
	unsigned int pad_bits : 7;    /*  88, bits 704..710 */
	unsigned int bf_u : 3;        /*  88, bits 711..713 */
	int bf_s : 12;                /*  88, bits 714..725 */
	enum color col;           /*  92 */
	struct inner arr[4];      /*  96 */
	int cnt;                  /* 160 */
	int tail[];               /* 164 */
} __pai;                          /* size 168 */

struct node { const char *name; struct node *__parent; } __pai;  /* __parent at 8 */

struct mt_same { int a; int extra; } __pai;
struct mt_diff { long a; } __pai;
struct amb___x { int z; long q; } __pai;      /* z at 0 */
struct amb___y { long q; int z; } __pai;      /* z at 8 */
struct agree___x { long q; int k; } __pai;    /* k at 8 */
struct agree___y { long r; int k; } __pai;    /* k at 8 */
#endif

#endif /* CORE_TYPES_H */
