"""`python -m silo`: the same as the `silo` command."""

import sys

from silo.cli.main import main

sys.exit(main())
