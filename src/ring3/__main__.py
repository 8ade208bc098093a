"""`python -m ring3` is the `ring3` command."""

import sys

from ring3.cli import main

sys.exit(main())
