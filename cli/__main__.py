"""``python -m cli``: the ``portrait`` command."""

import sys

from cli.main import main

sys.exit(main())
