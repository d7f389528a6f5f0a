"""silo's built-in Python runtime. It runs inside the environment: stdlib only, Python 3.8+.

bootstrap.py loads this directory as the package `silo_runtime`, so the modules here import each
other relatively and nothing of the runtime is importable by a name a function could also use.
Nothing here may import silo: the daemon's code is not present in an environment.
"""
