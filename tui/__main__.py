import sys

from loradeck.tui.launcher import main

sys.exit(main())
