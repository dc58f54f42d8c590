"""Hand-assembled BPF programs the kernel-layer tests and bench/rings.py load.

There is no object loader at this layer, so the test programs are built from
``pybpfload.obj.insn.Instruction``.  The tests at the bottom check the
assembler helpers themselves (encodings the kernel's verifier relies on).
"""

import os
import struct

from pybpfload.obj import insn as I
from pybpfload.obj.insn import Instruction, encode

# helper ids (enum bpf_func_id)
MAP_LOOKUP_ELEM = 1
GET_SMP_PROCESSOR_ID = 8
GET_CURRENT_PID_TGID = 14
PERF_EVENT_OUTPUT = 25
RINGBUF_OUTPUT = 130
LOOP = 181
BPF_F_CURRENT_CPU = 0xFFFFFFFF

PROG_TRACEPOINT = 5
PROG_RAW_TRACEPOINT = 17
PROG_TRACING = 26


def mov_imm(dst, imm):
    return Instruction(I.BPF_ALU64 | I.BPF_MOV | I.BPF_K, dst, 0, 0, imm)


def mov_reg(dst, src):
    return Instruction(I.BPF_ALU64 | I.BPF_MOV | I.BPF_X, dst, src, 0, 0)


def add_imm(dst, imm):
    return Instruction(I.BPF_ALU64 | I.BPF_ADD | I.BPF_K, dst, 0, 0, imm)


def rsh_imm(dst, imm):
    return Instruction(I.BPF_ALU64 | I.BPF_RSH | I.BPF_K, dst, 0, 0, imm)


def ld_map_fd(dst, fd):
    return Instruction(I.LD_IMM64, dst, I.BPF_PSEUDO_MAP_FD, 0, int(fd))


def ld_imm64(dst, imm):
    return Instruction(I.LD_IMM64, dst, 0, 0, imm)


def st_mem(size, dst, off, imm):
    return Instruction(I.BPF_ST | size | I.BPF_MEM, dst, 0, off, imm)


def stx_mem(size, dst, src, off):
    return Instruction(I.BPF_STX | size | I.BPF_MEM, dst, src, off, 0)


def atomic_add64(dst, src, off):
    return Instruction(I.BPF_STX | I.BPF_DW | I.BPF_ATOMIC, dst, src, off, I.BPF_ADD)


def jeq_imm(dst, imm, off):
    return Instruction(I.BPF_JMP | I.BPF_JEQ | I.BPF_K, dst, 0, off, imm)


def jne_imm(dst, imm, off):
    return Instruction(I.BPF_JMP | I.BPF_JNE | I.BPF_K, dst, 0, off, imm)


def call(helper):
    return Instruction(I.CALL, 0, 0, 0, helper)


def exit_():
    return Instruction(I.EXIT)


def _pid_filter(pid, skip):
    """r0 = tgid; if r0 != pid skip ``skip`` slots forward."""
    return [call(GET_CURRENT_PID_TGID), rsh_imm(0, 32), jne_imm(0, pid, skip)]


def _slots(insns):
    return sum(i.size for i in insns)


def counter_prog(map_fd, pid=None, key=0):
    """Increment u64 ``map[key]`` of an array map each time the current process runs it."""
    pid = os.getpid() if pid is None else pid
    body = [
        st_mem(I.BPF_W, 10, -4, key),
        ld_map_fd(1, map_fd),
        mov_reg(2, 10), add_imm(2, -4),
        call(MAP_LOOKUP_ELEM),
        jeq_imm(0, 0, 2),
        mov_imm(1, 1), atomic_add64(0, 1, 0),
    ]
    tail = [mov_imm(0, 0), exit_()]
    return encode(_pid_filter(pid, _slots(body)) + body + tail)


def output_prog(map_fd, size, count=1, ringbuf=False, pid=None, drop_counter_fd=None):
    """Emit ``count`` events of ``size`` bytes (``size`` multiple of 8, ≤ 256) per run,
    with bpf_perf_event_output (PERF_EVENT_ARRAY) or bpf_ringbuf_output (RINGBUF).

    Each event is: u64 sequence number within this run, u64 run marker (pid),
    then zero padding.  Unrolled (count ≤ 64) so it loads on any kernel.
    With ``drop_counter_fd`` (an array map, u64 values) every failed output
    increments its key 0.
    """
    pid = os.getpid() if pid is None else pid
    assert size % 8 == 0 and 16 <= size <= 256 and 1 <= count <= 64
    body = []                            # r6 = ctx (saved in the head)
    for off in range(-size, 0, 8):
        body.append(st_mem(I.BPF_DW, 10, off, 0))
    body.append(st_mem(I.BPF_DW, 10, -size + 8, pid))
    body.append(st_mem(I.BPF_DW, 10, -size - 8, 0))   # key 0 of the drop counter
    for n in range(count):
        body.append(st_mem(I.BPF_DW, 10, -size, n))
        if ringbuf:
            body += [ld_map_fd(1, map_fd), mov_reg(2, 10), add_imm(2, -size),
                     mov_imm(3, size), mov_imm(4, 0), call(RINGBUF_OUTPUT)]
            if drop_counter_fd is not None:
                body += [jeq_imm(0, 0, 8), ld_map_fd(1, drop_counter_fd),
                         mov_reg(2, 10), add_imm(2, -size - 8), call(MAP_LOOKUP_ELEM),
                         jeq_imm(0, 0, 2), mov_imm(1, 1), atomic_add64(0, 1, 0)]
        else:
            body += [mov_reg(1, 6), ld_map_fd(2, map_fd), ld_imm64(3, BPF_F_CURRENT_CPU),
                     mov_reg(4, 10), add_imm(4, -size), mov_imm(5, size),
                     call(PERF_EVENT_OUTPUT)]
    tail = [mov_imm(0, 0), exit_()]
    # the pid filter needs r1 (ctx) kept: save it before calling the helper
    head = [mov_reg(6, 1)] + _pid_filter(pid, _slots(body))
    return encode(head + body + tail)


def bad_prog():
    """Reads r2 before writing it: the verifier rejects with 'R2 !read_ok'."""
    return encode([mov_reg(0, 2), exit_()])


# -- tests of the helpers -------------------------------------------------------

def test_counter_prog_is_whole_slots():
    code = counter_prog(3, pid=1)
    assert len(code) % 8 == 0
    decoded = I.decode(code)
    assert decoded[-1].is_exit()
    # the ld_imm64 carries the map fd as a pseudo map fd
    maps = [i for i in decoded if i.is_ld_imm64()]
    assert maps and maps[0].src == I.BPF_PSEUDO_MAP_FD and maps[0].imm == 3


def test_pid_filter_jumps_to_tail():
    decoded = I.decode(counter_prog(3, pid=1234))
    jne = decoded[2]
    assert jne.imm == 1234
    # the jump lands on "r0 = 0" (two instructions before the end)
    slot_of = []
    pos = 0
    for ins in decoded:
        slot_of.append(pos)
        pos += ins.size
    target = slot_of[2] + 1 + jne.off
    assert target == slot_of[-2]


def test_output_prog_sizes():
    code = output_prog(3, 64, count=4)
    assert struct.unpack_from("<B", code)[0] == I.BPF_ALU64 | I.BPF_MOV | I.BPF_X
    assert len(I.decode(code)) > 4 * 6
