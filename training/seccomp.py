"""The sandbox's seccomp filter: a classic-BPF program that bubblewrap loads with ``--seccomp FD``.

Django-free, torch-free, no dependency: the program is small enough to assemble here and review
whole. It allows every system call except the ones a training job never needs and an escape would:

- debugging and reading other processes (ptrace, process_vm_*, pidfd_getfd, kcmp is harmless),
- mounts, namespaces and root changes (mount and the new mount API, pivot_root, chroot, unshare,
  setns, clone with a CLONE_NEW* flag, clone3, whose flags sit in memory the filter cannot read:
  it answers ENOSYS, so the C library falls back to clone),
- the kernel's keyring, BPF, perf events, userfaultfd, io_uring (whose operations seccomp cannot
  see), kexec, module loading, reboot, swap, accounting, quotas, the clock, syslog, file handles
  (open_by_handle_at is a classic container escape), fanotify,
- sockets of any family but AF_UNIX (no IP, netlink, packet or vsock sockets, even where a network
  namespace would have kept them useless); a multi-process (DDP) job's filter also allows
  AF_INET, because gloo's and NCCL's transports are TCP sockets, and NETLINK_ROUTE netlink,
  because both find their interface with getifaddrs(3). Both reach only the sandbox's own network
  namespace (loopback and nothing else; with no capability, route netlink can read it, not change
  it). AF_INET6, other netlink protocols, packet, vsock and the rest stay refused,
- any other ABI (x32, or 32-bit calls on a 64-bit kernel), whose numbers differ.

A denied call fails with EPERM (ENOSYS for clone3); nothing is killed, so a library that probes a
feature degrades as it would on a locked-down host. Supported: x86_64 and aarch64; elsewhere
`filter_program` returns None and the sandbox runs without the filter (its other walls remain).
"""

from __future__ import annotations

import errno
import platform
import struct

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
_NR, _ARCH, _ARG0 = 0, 4, 16  # args[0]: its low 32 bits on these little-endian machines
_LD_W_ABS = 0x20
_JEQ, _JGE, _JSET = 0x15, 0x35, 0x45
_RET = 0x06
ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
DENY = _ERRNO | errno.EPERM
NOSYS = _ERRNO | errno.ENOSYS
AF_UNIX = 1
AF_INET = 2
AF_NETLINK = 16
NETLINK_ROUTE = 0
_ARG2 = _ARG0 + 16  # args[2] (a socket's protocol): its low 32 bits
X32_BIT = 0x40000000
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (CLONE_NEWTIME is unshare-only).
CLONE_NEW_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# Denied outright, by name (the numbers per architecture follow).
DENIED = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "settimeofday",
    "syslog",
    "vhangup",
    "lookup_dcookie",
    "open_by_handle_at",
    "name_to_handle_at",
    "fanotify_init",
    "iopl",
    "ioperm",
)

# From <asm/unistd_64.h> (x86_64) and <asm-generic/unistd.h> (aarch64).
_X86_64 = {
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "pidfd_getfd": 438,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "unshare": 272,
    "setns": 308,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "bpf": 321,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "acct": 163,
    "quotactl": 179,
    "settimeofday": 164,
    "syslog": 103,
    "vhangup": 153,
    "lookup_dcookie": 212,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "fanotify_init": 300,
    "iopl": 172,
    "ioperm": 173,
    "clone": 56,
    "clone3": 435,
    "socket": 41,
    "socketpair": 53,
}
_AARCH64 = {
    "ptrace": 117,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "pidfd_getfd": 438,
    "mount": 40,
    "umount2": 39,
    "pivot_root": 41,
    "chroot": 51,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "unshare": 97,
    "setns": 268,
    "keyctl": 219,
    "add_key": 217,
    "request_key": 218,
    "bpf": 280,
    "perf_event_open": 241,
    "userfaultfd": 282,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "kexec_load": 104,
    "kexec_file_load": 294,
    "init_module": 105,
    "finit_module": 273,
    "delete_module": 106,
    "reboot": 142,
    "swapon": 224,
    "swapoff": 225,
    "acct": 89,
    "quotactl": 60,
    "settimeofday": 170,
    "syslog": 116,
    "vhangup": 58,
    "lookup_dcookie": 18,
    "open_by_handle_at": 265,
    "name_to_handle_at": 264,
    "fanotify_init": 262,
    "clone": 220,
    "clone3": 435,
    "socket": 198,
    "socketpair": 199,
}
# (AUDIT_ARCH_*, numbers, whether the x32 bit must be refused)
ARCHITECTURES = {
    "x86_64": (0xC000003E, _X86_64, True),
    "aarch64": (0xC00000B7, _AARCH64, False),
}

_Instruction = tuple[int, str | int, str | int, int]  # code, jump-if-true, jump-if-false, k


def _program(arch: int, numbers: dict[str, int], x32: bool, inet: bool = False) -> list[_Instruction]:
    """The filter with symbolic jump targets (labels), resolved by `_assemble`."""
    out: list[_Instruction] = [(_LD_W_ABS, 0, 0, _ARCH), (_JEQ, 0, "deny", arch), (_LD_W_ABS, 0, 0, _NR)]
    if x32:
        out.append((_JGE, "deny", 0, X32_BIT))
    out += [(_JEQ, "deny", 0, numbers[name]) for name in DENIED if name in numbers]
    out += [
        (_JEQ, "nosys", 0, numbers["clone3"]),
        (_JEQ, "clone", 0, numbers["clone"]),
        (_JEQ, "socket", 0, numbers["socket"]),
        (_JEQ, "socket", 0, numbers["socketpair"]),
        (_RET, 0, 0, ALLOW),
    ]
    labels: dict[str, list[_Instruction]] = {
        "clone": [(_LD_W_ABS, 0, 0, _ARG0), (_JSET, "deny", "allow", CLONE_NEW_FLAGS)],
        "socket": [(_LD_W_ABS, 0, 0, _ARG0), (_JEQ, "allow", "inet" if inet else "deny", AF_UNIX)],
        "inet": (
            [
                (_JEQ, "allow", 0, AF_INET),
                (_JEQ, 0, "deny", AF_NETLINK),
                (_LD_W_ABS, 0, 0, _ARG2),
                (_JEQ, "allow", "deny", NETLINK_ROUTE),
            ]
            if inet
            else []
        ),
        "allow": [(_RET, 0, 0, ALLOW)],
        "deny": [(_RET, 0, 0, DENY)],
        "nosys": [(_RET, 0, 0, NOSYS)],
    }
    for label, block in labels.items():
        out.append((-1, label, 0, 0))  # a label marker, dropped by _assemble
        out += block
    return out


def _assemble(program: list[_Instruction]) -> bytes:
    """Resolve labels into relative jumps and pack struct sock_filter {u16 code; u8 jt, jf; u32 k}."""
    positions: dict[str, int] = {}
    instructions: list[_Instruction] = []
    for code, jt, jf, k in program:
        if code == -1:
            positions[str(jt)] = len(instructions)
        else:
            instructions.append((code, jt, jf, k))
    packed = b""
    for index, (code, jt, jf, k) in enumerate(instructions):
        offsets = [positions[j] - index - 1 if isinstance(j, str) else j for j in (jt, jf)]
        if not all(0 <= offset <= 255 for offset in offsets):
            raise ValueError(f"jump out of range at instruction {index}")
        packed += struct.pack("<HBBI", code, offsets[0], offsets[1], k)
    return packed


def filter_program(machine: str | None = None, *, inet: bool = False) -> bytes | None:
    """The packed BPF program for this machine's architecture, or None where unsupported.

    ``inet``: also allow AF_INET and NETLINK_ROUTE sockets (a DDP job's ranks talk over the
    sandbox's loopback, and find it with getifaddrs).
    """
    found = ARCHITECTURES.get(machine or platform.machine())
    if found is None:
        return None
    return _assemble(_program(*found, inet=inet))
