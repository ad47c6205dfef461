"""`python -m jukics` is the `jukics` command."""

import sys

from jukics.cli.main import main

sys.exit(main())
