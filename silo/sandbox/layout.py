"""What an environment looks like from inside, whichever backend builds it.

Every isolating backend shows the runtime the same tree: the host's /usr and the few /etc files
the runtimes need, the code at /var/task, the function's layers merged at /opt (silo.store.opt),
silo's runtime directory at /var/runtime (its Python or its Node.js runtime), for an interpreter
that lives outside /usr (pyenv, /opt), that interpreter at /var/lang, where Lambda keeps its own, and for
a Python runtime the boto3 and botocore it ships (silo.store.sdk) at /var/lang/lib/python3.x/site-packages.
Backends differ only in how they build that tree (binds in a mount
namespace, an OCI bundle).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from silo.jail.spec import Bind
from silo.runtimes import catalog
from silo.sandbox.base import LaunchSpec

TASK_ROOT = "/var/task"
OPT_DIR = "/opt"
RUNTIME_DIR = "/var/runtime"
LANG_DIR = "/var/lang"
RUNTIME_API_PORT = 9001
PATH = "/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/opt/bin"
# Host files the runtimes need to link, resolve certificates and run shell tools; all read-only.
SYSTEM_BINDS = ("/usr", "/etc/ld.so.cache", "/etc/ssl", "/etc/ca-certificates", "/etc/alternatives")
# Top-level names that merged-/usr distributions keep as symlinks into /usr.
USR_LINKS = ("bin", "sbin", "lib", "lib64")


@dataclass(frozen=True, slots=True)
class RuntimeLayout:
    """The runtime's argv, the host paths it sees, and the variables that say where they are."""

    argv: list[str]
    binds: list[Bind]
    environ: dict[str, str]
    python: str | None  # the Python interpreter as the environment sees it; None for Node.js and custom runtimes


def etc_files(uid: int, gid: int, resolv: str = "") -> dict[str, str]:
    """The /etc files written per environment: its own user, loopback names, and the DNS servers it may use."""
    return {
        "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\nsbx_user:x:{uid}:{gid}::/tmp:/usr/sbin/nologin\n",
        "group": f"root:x:0:\nsbx_user:x:{gid}:\n",
        "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
        "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
        "resolv.conf": resolv,
    }


def lang_prefix(interpreter: catalog.Interpreter) -> str:
    """The interpreter's prefix on the host when environments see it at /var/lang; "" when it lives under
    /usr, which they see where it is."""
    return "" if interpreter.prefix.is_relative_to("/usr") else str(interpreter.prefix)


def runtime_layout(spec: LaunchSpec) -> RuntimeLayout:
    """argv, binds and variables of the runtime of `spec`, as the environment sees them."""
    binds = [Bind(p, p) for p in SYSTEM_BINDS if os.path.exists(p)]
    binds.append(Bind(str(spec.code_dir), TASK_ROOT))
    if spec.opt_dir is not None:
        # Read-only like the code (every bind here is): a layer's files can be read, never changed.
        binds.append(Bind(str(spec.opt_dir), OPT_DIR))
    binds.append(Bind(str(catalog.builtin_runtime_dir(spec.runtime)), RUNTIME_DIR))
    extra: dict[str, str] = {}
    libraries: list[str] = []
    exe = None
    interpreter = catalog.interpreter_of(spec.runtime)
    if interpreter is not None:
        exe = str(interpreter.executable)
        if lang_prefix(interpreter):
            # An interpreter outside /usr (pyenv, /opt, a node of its own) appears at /var/lang, where Lambda
            # keeps its own.
            binds.append(Bind(str(interpreter.prefix), LANG_DIR))
            exe = f"{LANG_DIR}/{interpreter.executable.relative_to(interpreter.prefix)}"
            libraries.append(f"{LANG_DIR}/lib")
    if spec.sdk_dir is not None and catalog.is_python(spec.runtime):
        # boto3 and botocore where Lambda's Python runtimes have them. After the interpreter's bind, which it
        # covers when the interpreter is at /var/lang: the runtime starts with -S, so nothing of the host
        # interpreter's own site-packages was ever on the function's path.
        binds.append(Bind(str(spec.sdk_dir), catalog.sdk_path(spec.runtime)))
    if spec.opt_dir is not None:
        # Where Lambda's runtimes look for a layer's shared libraries.
        libraries.append(f"{OPT_DIR}/lib")
    if libraries:
        extra["LD_LIBRARY_PATH"] = ":".join(libraries)
    argv = catalog.launch_command(spec.runtime, TASK_ROOT, RUNTIME_DIR, exe, spec.memory_mb)
    if catalog.is_node(spec.runtime) and "NODE_PATH" not in spec.environ:
        extra["NODE_PATH"] = catalog.node_path(spec.runtime, TASK_ROOT)
    address = f"127.0.0.1:{RUNTIME_API_PORT}"
    environ = dict(
        spec.environ,
        **extra,
        **{name: f"http://{address}{path}" for name, path in spec.runtime_api_urls.items()},
        PATH=PATH,
        LAMBDA_TASK_ROOT=TASK_ROOT,
        LAMBDA_RUNTIME_DIR=RUNTIME_DIR,
        AWS_LAMBDA_RUNTIME_API=address,
    )
    return RuntimeLayout(argv, binds, environ, exe if catalog.is_python(spec.runtime) else None)
