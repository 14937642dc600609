"""`python -m loradeck.trainer ...`: the headless CLI (no TUI commands)."""

import sys

from loradeck.trainer.cli import main

sys.exit(main())
