"""Entry point of silo's built-in Python runtime: `python3.x -S -B bootstrap.py`, cwd = the code.

It only wires. The modules next to it are loaded as the package `silo_runtime`, and this
directory is taken off sys.path, so no file of the runtime can shadow a module of the function.
"""

import os
import sys
import types


def _load_runtime() -> types.ModuleType:
    here = os.path.dirname(os.path.realpath(__file__))
    if sys.path and os.path.realpath(sys.path[0] or os.curdir) == here:
        del sys.path[0]
    # A bare package whose __path__ is this directory: its modules import each other relatively,
    # and importlib.util (several ms of imports at every cold start) is not needed.
    package = types.ModuleType("silo_runtime", __doc__)
    package.__path__ = [here]
    package.__file__ = os.path.join(here, "__init__.py")
    sys.modules["silo_runtime"] = package
    __import__("silo_runtime.loop")
    return sys.modules["silo_runtime.loop"]


if __name__ == "__main__":
    sys.exit(_load_runtime().main(os.environ))
