"""Which backend runs the environments of this server: `silo serve --sandbox auto|jail|gvisor|process`."""

from __future__ import annotations

import logging

from silo.config import Settings
from silo.jail import seccomp
from silo.sandbox.base import Sandbox
from silo.sandbox.gvisor import GvisorSandbox
from silo.sandbox.identity import IdentityUnavailable
from silo.sandbox.jail import JailSandbox, SandboxUnavailable
from silo.sandbox.process import ProcessSandbox

log = logging.getLogger("silo")

SANDBOXES = ("auto", "jail", "gvisor", "process")


def make_sandbox(settings: Settings) -> Sandbox:
    """The environment backend, said in the log."""
    sandbox = _make_sandbox(settings)
    log.info(
        "environments run in the %s backend%s",
        sandbox.name,
        "" if sandbox.isolates else " (no isolation between tenants: development only)",
    )
    return sandbox


def _make_sandbox(settings: Settings) -> Sandbox:
    """The jail when this machine can run it, else only if asked, the process one."""
    choice = settings.sandbox
    if choice not in SANDBOXES:
        raise SystemExit(f"silo: unknown sandbox backend {choice!r}; choose one of: {', '.join(SANDBOXES)}")
    if choice == "gvisor":
        try:
            return GvisorSandbox(settings.data_dir / "gvisor", seccomp.compile_filter(seccomp.load_policy()))
        except (SandboxUnavailable, IdentityUnavailable) as exc:
            raise SystemExit(f"silo: {exc}") from None
    if choice in ("auto", "jail"):
        try:
            return JailSandbox(
                settings.env_dir,
                seccomp.compile_filter(seccomp.load_policy()),
                template_max_forks=settings.template_max_forks,
            )
        except IdentityUnavailable as exc:
            # The jail could run here, so falling back to a backend without isolation would be wrong.
            raise SystemExit(f"silo: {exc}") from None
        except SandboxUnavailable as exc:
            if choice == "jail":
                raise SystemExit(f"silo: {exc}") from None
            log.warning("the jail is not available (%s); falling back to the development backend", exc)
    return ProcessSandbox(settings.env_dir)


def other_sandboxes(settings: Settings, default: Sandbox) -> dict[str, Sandbox]:
    """Backends a function may ask for with its Sandbox setting, besides the default one."""
    if default.name != "jail":
        return {}
    try:
        gvisor = GvisorSandbox(settings.data_dir / "gvisor", seccomp.compile_filter(seccomp.load_policy()))
    except (SandboxUnavailable, IdentityUnavailable) as exc:
        log.warning("functions whose Sandbox setting is gvisor cannot run on this server: %s", exc)
        return {}
    log.info("functions whose Sandbox setting is gvisor run in gVisor sandboxes")
    return {gvisor.name: gvisor}
