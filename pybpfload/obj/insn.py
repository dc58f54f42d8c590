"""BPF instructions: encoding, decoding, and the metadata that travels with them.

A program is a list of :class:`Instruction`.  A 16-byte ``ld_imm64`` is ONE
``Instruction`` whose ``size`` is 2 slots and whose ``imm`` holds the full
64-bit constant; every other instruction is one 8-byte slot.  Jump and call
offsets stay in slots, as the kernel counts them.

Relocation metadata is attached to the instruction it belongs to, never kept
in side tables keyed by offset, so that appending subprograms or moving code
needs no offset bookkeeping:

``reference``   name of the symbol the instruction refers to (a map, a data
                section, a subprogram), set from ELF relocations.
``ref_offset``  byte offset into that symbol's section (global data).
``core``        the CO-RE relocation record (``btf_ext.CoreRelo``) for it.
``func_info``   BTF type id of the function starting here (``FuncInfo``).
``line_info``   a ``LineInfo`` for this instruction.
``symbol``      name of the function that starts at this instruction.
"""

import struct

__all__ = ["Instruction", "decode", "encode", "slot_count"]

# instruction classes
BPF_LD, BPF_LDX, BPF_ST, BPF_STX, BPF_ALU, BPF_JMP, BPF_JMP32, BPF_ALU64 = range(8)
# size modifiers
BPF_W, BPF_H, BPF_B, BPF_DW = 0x00, 0x08, 0x10, 0x18
# mode modifiers
BPF_IMM, BPF_ABS, BPF_IND, BPF_MEM, BPF_MEMSX, BPF_ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0
# source
BPF_K, BPF_X = 0x00, 0x08
# alu/jmp ops
BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70)
BPF_NEG, BPF_MOD, BPF_XOR, BPF_MOV, BPF_ARSH, BPF_END = 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE = 0x00, 0x10, 0x20, 0x30, 0x40, 0x50
BPF_JSGT, BPF_JSGE, BPF_CALL, BPF_EXIT = 0x60, 0x70, 0x80, 0x90
BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE = 0xA0, 0xB0, 0xC0, 0xD0

# src_reg values of ld_imm64 and call
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2
BPF_PSEUDO_BTF_ID = 3
BPF_PSEUDO_FUNC = 4
BPF_PSEUDO_MAP_IDX = 5
BPF_PSEUDO_MAP_IDX_VALUE = 6
BPF_PSEUDO_CALL = 1
BPF_PSEUDO_KFUNC_CALL = 2

LD_IMM64 = BPF_LD | BPF_DW | BPF_IMM  # 0x18
CALL = BPF_JMP | BPF_CALL              # 0x85
EXIT = BPF_JMP | BPF_EXIT              # 0x95

#: The helper-call number libbpf puts in an instruction whose CO-RE relocation
#: failed: the verifier rejects it only if it is reachable.
POISON_CALL_IMM = 0xBAD2310

_SLOT = struct.Struct("<BBhi")
SLOT_SIZE = 8


class Instruction:
    """One BPF instruction (an ``ld_imm64`` counts as one, 2 slots wide)."""

    __slots__ = ("code", "dst", "src", "off", "imm", "reference", "ref_offset",
                 "core", "func_info", "line_info", "symbol")

    def __init__(self, code, dst=0, src=0, off=0, imm=0, *, reference=None,
                 ref_offset=0, core=None, func_info=None, line_info=None, symbol=None):
        self.code = code
        self.dst = dst
        self.src = src
        self.off = off
        self.imm = imm
        self.reference = reference
        self.ref_offset = ref_offset
        self.core = core
        self.func_info = func_info
        self.line_info = line_info
        self.symbol = symbol

    # -- classification ------------------------------------------------------
    @property
    def size(self):
        """Width in 8-byte slots."""
        return 2 if self.code == LD_IMM64 else 1

    @property
    def cls(self):
        return self.code & 0x07

    def is_ld_imm64(self):
        return self.code == LD_IMM64

    def is_call(self):
        return self.code == CALL

    def is_bpf_to_bpf_call(self):
        return self.code == CALL and self.src == BPF_PSEUDO_CALL

    def is_helper_call(self):
        return self.code == CALL and self.src == 0

    def is_func_reference(self):
        """``ld_imm64 rX, <subprogram>`` (a callback passed to a helper)."""
        return self.code == LD_IMM64 and self.src == BPF_PSEUDO_FUNC

    def is_exit(self):
        return self.code == EXIT

    def is_jump(self):
        c = self.cls
        return c in (BPF_JMP, BPF_JMP32) and self.code not in (CALL, EXIT)

    def copy(self):
        new = Instruction.__new__(Instruction)
        for name in Instruction.__slots__:
            setattr(new, name, getattr(self, name))
        return new

    def __eq__(self, other):
        return (isinstance(other, Instruction) and self.code == other.code and
                self.dst == other.dst and self.src == other.src and
                self.off == other.off and self.imm == other.imm)

    def __hash__(self):
        return hash((self.code, self.dst, self.src, self.off, self.imm))

    def __repr__(self):
        extra = f" ref={self.reference!r}" if self.reference else ""
        if self.core is not None:
            extra += " core"
        return (f"Instruction(code={self.code:#04x}, dst={self.dst}, src={self.src}, "
                f"off={self.off}, imm={self.imm}{extra})")


def decode(data, offset=0, length=None):
    """Decode raw instruction bytes into a list of :class:`Instruction`.

    ``ld_imm64`` pairs become one instruction.  A truncated ``ld_imm64`` or a
    length that is not a multiple of 8 raises ``ParseError``.
    """
    from ..errors import ParseError

    if length is None:
        length = len(data) - offset
    if length % SLOT_SIZE:
        raise ParseError(f"instruction bytes ({length}) are not a multiple of 8")
    end = offset + length
    out = []
    unpack = _SLOT.unpack_from
    pos = offset
    while pos < end:
        code, regs, off, imm = unpack(data, pos)
        if code == LD_IMM64:
            if pos + 16 > end:
                raise ParseError(f"truncated ld_imm64 at byte {pos - offset}")
            _, _, _, hi = unpack(data, pos + 8)
            imm = (imm & 0xFFFFFFFF) | ((hi & 0xFFFFFFFF) << 32)
            if imm >= 1 << 63:
                imm -= 1 << 64
            pos += 16
        else:
            pos += 8
        out.append(Instruction(code, regs & 0x0F, regs >> 4, off, imm))
    return out


def encode(insns):
    """Encode instructions into the bytes the kernel takes."""
    buf = bytearray(SLOT_SIZE * slot_count(insns))
    pack = _SLOT.pack_into
    pos = 0
    for ins in insns:
        regs = (ins.src << 4) | (ins.dst & 0x0F)
        if ins.code == LD_IMM64:
            imm = ins.imm & 0xFFFFFFFFFFFFFFFF
            lo, hi = imm & 0xFFFFFFFF, imm >> 32
            pack(buf, pos, ins.code, regs, ins.off, _s32(lo))
            pack(buf, pos + 8, 0, 0, 0, _s32(hi))
            pos += 16
        else:
            pack(buf, pos, ins.code, regs, ins.off, _s32(ins.imm & 0xFFFFFFFF))
            pos += 8
    return bytes(buf)


def slot_count(insns):
    """Number of 8-byte slots the instructions occupy."""
    return sum(2 if i.code == LD_IMM64 else 1 for i in insns)


def _s32(v):
    return v - (1 << 32) if v & 0x80000000 else v
