"""Which backend runs the environments of this server: `silo serve --sandbox auto|jail|gvisor|process`.

silo fails closed: tenant code never runs unisolated unless the operator named the `process` backend.
`auto` takes the jail, else gVisor, else refuses to start, saying what each backend lacked and what to
do. The seccomp policy is part of the isolation: a policy that cannot be read, does not compile or
denies nothing refuses the start too, whichever isolating backend was asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from silo.config import Settings
from silo.jail import cgroup_mount, cgroups, seccomp
from silo.sandbox.base import Sandbox, SandboxUnavailable
from silo.sandbox.gvisor import GvisorSandbox
from silo.sandbox.identity import IdentityUnavailable
from silo.sandbox.jail import JailSandbox
from silo.sandbox.process import ProcessSandbox

log = logging.getLogger("silo")

SANDBOXES = ("auto", "jail", "gvisor", "process")
# What `auto` tries, in order: only backends that isolate tenants.
AUTO_ORDER = ("jail", "gvisor")
WHAT_TO_DO = (
    "To isolate tenants, run silo as root on a host with cgroups (and runsc, for gVisor): "
    "sudo make run in a checkout. For development only, with no isolation at all between tenants "
    "or from the host, name the unisolated backend: silo serve --sandbox process "
    "(SILO_SANDBOX=process make run)."
)
UNISOLATED = (
    "the %s sandbox backend does NOT isolate tenants: environments are plain processes that share the "
    "host's processes, network and files (each has only a private /tmp). It runs only because it was "
    "named (--sandbox process), for development: never run untrusted code on this server. For isolation "
    "run silo as root with --sandbox auto (the default)."
)

Factory = Callable[[], Sandbox]


def make_sandbox(settings: Settings, policy: Path = seccomp.DEFAULT_POLICY) -> Sandbox:
    """The backend `--sandbox` names; SystemExit, saying why and what to do, when it cannot run here."""
    choice = settings.sandbox
    if choice not in SANDBOXES:
        raise SystemExit(f"silo: unknown sandbox backend {choice!r}; choose one of: {', '.join(SANDBOXES)}")
    if choice == "process":
        sandbox: Sandbox = ProcessSandbox(settings.env_dir)
    else:
        try:
            program = seccomp_filter(policy)
            sandbox = choose(choice, isolating_backends(settings, program))
        except (SandboxUnavailable, IdentityUnavailable) as exc:
            raise SystemExit(f"silo: {exc}") from None
    if sandbox.isolates:
        log.info("environments run in the %s backend", sandbox.name)
        if settings.cgroup_favordynmods and cgroups.version() == 2:
            log.info("cgroup v2: %s", cgroup_mount.set_favordynmods(cgroups.ROOT))
    else:
        log.warning(UNISOLATED, sandbox.name)
    return sandbox


def isolating_backends(settings: Settings, program: bytes) -> dict[str, Factory]:
    """How to build each backend that isolates tenants, with the compiled seccomp filter."""
    return {
        "jail": lambda: JailSandbox(
            settings.env_dir,
            program,
            template_max_forks=settings.template_max_forks,
            cgroup_base=settings.cgroup_base,
        ),
        "gvisor": lambda: GvisorSandbox(settings.data_dir / "gvisor", program, cgroup_base=settings.cgroup_base),
    }


def choose(choice: str, backends: Mapping[str, Factory]) -> Sandbox:
    """The backend `choice` names or, for `auto`, the first of AUTO_ORDER that can run here.

    Raises SandboxUnavailable naming, for each backend tried, the check it failed, and what to do. An
    IdentityUnavailable (the jail could run, but this daemon's slot on the host cannot be had) is not a
    reason to try another backend: it passes through."""
    tried = AUTO_ORDER if choice == "auto" else (choice,)
    refusals: list[tuple[str, str]] = []
    for name in tried:
        try:
            sandbox = backends[name]()
        except SandboxUnavailable as exc:
            refusals.append((name, str(exc)))
            continue
        for other, why in refusals:
            log.warning("the %s backend cannot run here (%s); environments run in the %s backend", other, why, name)
        return sandbox
    raise SandboxUnavailable(refusal(choice, refusals))


def refusal(choice: str, refusals: list[tuple[str, str]]) -> str:
    """Why silo does not start, for a person: each backend's failed check, then what to do."""
    if choice != "auto":
        ((name, why),) = refusals
        return f"the {name} backend (--sandbox {choice}) cannot run here, so silo does not start: {why}. {WHAT_TO_DO}"
    reasons = "".join(f"\n  {name}: {why}" for name, why in refusals)
    return (
        "no backend that isolates tenants can run here, so silo does not start (--sandbox auto never "
        f"falls back to running tenants unisolated):{reasons}\n{WHAT_TO_DO}"
    )


def seccomp_filter(policy: Path) -> bytes:
    """The environments' seccomp filter, compiled from `policy`. Raises SandboxUnavailable when the policy
    cannot be read, does not compile, or denies nothing: an isolating backend never starts without one."""
    try:
        parsed = seccomp.load_policy(policy)
        program = seccomp.compile_filter(parsed)
    except (OSError, ValueError) as exc:  # PolicyError is a ValueError, as is text that is not UTF-8
        raise SandboxUnavailable(
            f"the seccomp policy {policy} cannot be used ({exc}), and environments never run without one; "
            "restore the policy file (silo/jail/seccomp_policy.json in silo's source)"
        ) from None
    if not program or (not parsed.rules and parsed.default.kind == "allow"):
        raise SandboxUnavailable(
            f"the seccomp policy {policy} denies nothing, and environments never run without a filter; "
            "restore the policy file (silo/jail/seccomp_policy.json in silo's source)"
        )
    return program


def other_sandboxes(settings: Settings, default: Sandbox, policy: Path = seccomp.DEFAULT_POLICY) -> dict[str, Sandbox]:
    """Backends a function may ask for with its Sandbox setting, besides the default one."""
    if default.name != "jail":
        return {}
    try:
        gvisor = isolating_backends(settings, seccomp_filter(policy))["gvisor"]()
    except (SandboxUnavailable, IdentityUnavailable) as exc:
        log.warning("functions whose Sandbox setting is gvisor cannot run on this server: %s", exc)
        return {}
    log.info("functions whose Sandbox setting is gvisor run in gVisor sandboxes")
    return {gvisor.name: gvisor}
