"""The environment's seccomp filter: a policy kept as data, compiled to classic BPF, installed last.

`load_policy` reads and validates `seccomp_policy.json`, `compile_filter` turns it into the `struct
sock_filter` array the kernel takes (once per policy, in the parent), and `install` loads that array in
the freshly forked child right before it execs the runtime; the filter survives `execve` and is
inherited by every child the runtime forks. `install` is safe right after fork: it takes no locks,
starts no threads and logs nothing. This module imports nothing from silo outside `silo.jail`.

Only x86_64 is supported: argument offsets assume a little-endian `struct seccomp_data`, and the
seccomp system call number is x86_64's.
"""

from __future__ import annotations

import errno
import json
import struct
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

from silo.jail import syscalls

DEFAULT_POLICY = Path(__file__).with_name("seccomp_policy.json")

# Return values of a filter (linux/seccomp.h); ERRNO carries the errno in its low 16 bits.
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

# Classic BPF opcodes (linux/bpf_common.h): the only five the compiler emits.
LD_W_ABS = 0x20  # A = 32-bit word of seccomp_data at offset k
ALU_AND_K = 0x54  # A &= k
JEQ_K = 0x15  # pc += (A == k) ? jt : jf
JSET_K = 0x45  # pc += (A & k) ? jt : jf
RET_K = 0x06  # return k
MAX_INSNS = 4096  # BPF_MAXINSNS: the kernel refuses longer programs

# struct seccomp_data {int nr; u32 arch; u64 instruction_pointer; u64 args[6];}, little-endian.
OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARGS = 16

_ARCHES = {"x86_64": 0xC000003E}  # AUDIT_ARCH_X86_64
_ACTIONS = ("allow", "errno", "kill_process")
_OPS = ("in", "not_in", "any_bits")
_MAX_VALUES = 32  # keeps every jump of a condition far below the 255 a jump offset can hold


_INSN = struct.Struct("<HBBI")  # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k;}


class PolicyError(ValueError):
    """The policy file is malformed; the message names the offending entry."""


@dataclass(frozen=True)
class Action:
    kind: str  # one of _ACTIONS
    errno: int = 0

    @property
    def ret(self) -> int:
        """The filter's return value for this action."""
        if self.kind == "allow":
            return RET_ALLOW
        if self.kind == "kill_process":
            return RET_KILL_PROCESS
        return RET_ERRNO | self.errno


@dataclass(frozen=True)
class Condition:
    """Holds when the low 32 bits of args[arg], ANDed with mask, are in / not in values, or share a bit with them."""

    arg: int
    op: str  # one of _OPS
    values: tuple[int, ...]
    mask: int = 0xFFFFFFFF


@dataclass(frozen=True)
class Rule:
    """`action` for syscall `nr`: always, or only when any condition in `when` holds."""

    name: str
    nr: int
    action: Action
    reason: str
    when: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Policy:
    arch: str
    audit_arch: int
    on_wrong_arch: Action
    x32_bit: int
    on_x32: Action
    default: Action
    rules: tuple[Rule, ...]


def load_policy(path: Path = DEFAULT_POLICY) -> Policy:
    """Read and validate a policy file; raises PolicyError (also for duplicate JSON keys)."""
    try:
        data = json.loads(path.read_text(), object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{path.name}: {exc}") from exc
    return parse_policy(data)


def parse_policy(data: object) -> Policy:
    """Validate an already-decoded policy document (see seccomp_policy.json for the shape)."""
    top = _object(data, "policy", required={"arch", "x32", "default", "deny_action", "rules"}, optional={"about"})
    arch = _object(top["arch"], "arch", required={"name", "audit_arch", "on_mismatch"})
    name = arch["name"]
    if not isinstance(name, str) or name not in _ARCHES or _u32(arch["audit_arch"], "arch.audit_arch") != _ARCHES[name]:
        raise PolicyError(f"arch: only x86_64 with audit_arch {_ARCHES['x86_64']:#x} is supported")
    x32 = _object(top["x32"], "x32", required={"syscall_bit", "action"})
    deny = _action(top["deny_action"], "deny_action")
    rules_data = top["rules"]
    if not isinstance(rules_data, list):
        raise PolicyError("rules: expected a list")
    rules = tuple(_rule(entry, deny, f"rules[{i}]") for i, entry in enumerate(rules_data))
    for attr in ("name", "nr"):
        seen: set[object] = set()
        for rule in rules:
            if getattr(rule, attr) in seen:
                raise PolicyError(f"rule {rule.name} ({rule.nr}): duplicate {attr}")
            seen.add(getattr(rule, attr))
    return Policy(
        arch=name,
        audit_arch=_ARCHES[name],
        on_wrong_arch=_action(arch["on_mismatch"], "arch.on_mismatch"),
        x32_bit=_u32(x32["syscall_bit"], "x32.syscall_bit"),
        on_x32=_action(x32["action"], "x32.action"),
        default=_action(top["default"], "default"),
        rules=rules,
    )


def compile_filter(policy: Policy) -> bytes:
    """The policy as an array of `struct sock_filter`, ready for `install`.

    Layout, straight-line so no jump can exceed 255: check the arch, refuse x32, then one small block
    per rule (or per condition) that jumps over itself when the syscall number differs, and finally
    the default action. A holds the syscall number between blocks.
    """
    prog = [
        # The number means nothing outside its own table (an `int 0x80` is i386): check the arch first.
        _insn(LD_W_ABS, OFFSET_ARCH),
        _insn(JEQ_K, policy.audit_arch, jt=1),
        _insn(RET_K, policy.on_wrong_arch.ret),
        _insn(LD_W_ABS, OFFSET_NR),
        # x32 reaches the same kernel handlers under numbers with this bit set, past every rule below.
        _insn(JSET_K, policy.x32_bit, jf=1),
        _insn(RET_K, policy.on_x32.ret),
    ]
    for rule in policy.rules:
        if not rule.when:
            prog += [_insn(JEQ_K, rule.nr, jf=1), _insn(RET_K, rule.action.ret)]
        for cond in rule.when:
            prog += _condition_block(rule.nr, cond, rule.action)
    prog.append(_insn(RET_K, policy.default.ret))
    if len(prog) > MAX_INSNS:
        raise PolicyError(f"policy compiles to {len(prog)} instructions, the kernel takes at most {MAX_INSNS}")
    return b"".join(prog)


def install(filter: bytes) -> None:
    """Install a compiled filter on every thread of the calling process; irreversible.

    Raises OSError naming the step that failed. Call it last, right before exec of the runtime. (The
    jail calls `syscalls.seccomp_install` directly: importing this module costs its start milliseconds.)
    """
    syscalls.seccomp_install(filter)


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return _INSN.pack(code, jt, jf, k)


def _condition_block(nr: int, cond: Condition, action: Action) -> list[bytes]:
    # [JEQ nr] [LD arg] [AND mask]? [compare ...] [RET action] [LD nr]: a mismatch on nr skips the
    # whole block with A intact; a condition that does not hold lands on the final LD, restoring A = nr.
    body = [_insn(LD_W_ABS, OFFSET_ARGS + 8 * cond.arg)]
    if cond.mask != 0xFFFFFFFF:
        body.append(_insn(ALU_AND_K, cond.mask))
    k = len(cond.values)
    if cond.op == "any_bits":
        body.append(_insn(JSET_K, cond.values[0], jf=1))
    elif cond.op == "in":  # any equal value jumps to RET; the last one's miss skips it
        body += [_insn(JEQ_K, v, jt=k - 1 - i, jf=1 if i == k - 1 else 0) for i, v in enumerate(cond.values)]
    else:  # not_in: any equal value skips RET; falling through every comparison reaches it
        body += [_insn(JEQ_K, v, jt=k - i) for i, v in enumerate(cond.values)]
    body += [_insn(RET_K, action.ret), _insn(LD_W_ABS, OFFSET_NR)]
    return [_insn(JEQ_K, nr, jf=len(body)), *body]


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise PolicyError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _object(value: object, where: str, required: Set[str], optional: Set[str] = frozenset()) -> dict[str, object]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: expected an object")
    keys = set(value)
    if missing := required - keys:
        raise PolicyError(f"{where}: missing {sorted(missing)}")
    if unknown := keys - required - optional:
        raise PolicyError(f"{where}: unknown {sorted(unknown)}")
    return value


def _u32(value: object, where: str) -> int:
    # Masks and flags read best in hex, which JSON lacks: accept "0x..." strings as well as integers.
    try:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError
        number = value if isinstance(value, int) else int(value, 0)
    except ValueError:
        raise PolicyError(f'{where}: expected an integer or a "0x..." string, got {value!r}') from None
    if not 0 <= number <= 0xFFFFFFFF:
        raise PolicyError(f"{where}: {number:#x} does not fit in 32 bits")
    return number


def _action(value: object, where: str) -> Action:
    kind, _, code = str(value).partition(":")
    if kind not in _ACTIONS or (kind == "errno") != bool(code):
        raise PolicyError(f"{where}: unknown action {value!r} (expected allow, kill_process or errno:NAME)")
    if kind != "errno":
        return Action(kind)
    if not code.isupper() or not isinstance(getattr(errno, code, None), int):
        raise PolicyError(f"{where}: unknown errno {code!r}")
    return Action(kind, getattr(errno, code))


def _rule(value: object, deny: Action, where: str) -> Rule:
    entry = _object(value, where, required={"name", "nr", "reason"}, optional={"action", "when"})
    name, reason = entry["name"], entry["reason"]
    if not isinstance(name, str) or not name or not isinstance(reason, str) or not reason:
        raise PolicyError(f"{where}: name and reason must be non-empty strings")
    nr = entry["nr"]
    if isinstance(nr, bool) or not isinstance(nr, int) or not 0 <= nr < 0x40000000:
        raise PolicyError(f"{where} ({name}): nr must be an x86_64 syscall number, got {nr!r}")
    action = _action(entry["action"], f"{where}.action") if "action" in entry else deny
    when = entry.get("when", [])
    if not isinstance(when, list) or ("when" in entry and not when):
        raise PolicyError(f"{where} ({name}): when must be a non-empty list")
    conds = tuple(_condition(c, f"{where}.when[{i}]") for i, c in enumerate(when))
    return Rule(name, nr, action, reason, conds)


def _condition(value: object, where: str) -> Condition:
    entry = _object(value, where, required={"arg"}, optional={"mask", *_OPS})
    ops = [op for op in _OPS if op in entry]
    if len(ops) != 1:
        raise PolicyError(f"{where}: exactly one of {list(_OPS)} expected")
    op = ops[0]
    arg = entry["arg"]
    if isinstance(arg, bool) or not isinstance(arg, int) or not 0 <= arg <= 5:
        raise PolicyError(f"{where}: arg must be 0-5")
    raw = entry[op]
    if op == "any_bits":
        raw = [raw]
    if not isinstance(raw, list) or not 0 < len(raw) <= _MAX_VALUES:
        raise PolicyError(f"{where}: {op} needs a list of 1-{_MAX_VALUES} values")
    values = tuple(_u32(v, f"{where}.{op}") for v in raw)
    if op == "any_bits" and not values[0]:
        raise PolicyError(f"{where}: any_bits 0 never matches")
    mask = _u32(entry.get("mask", 0xFFFFFFFF), f"{where}.mask")
    return Condition(arg, op, values, mask)
