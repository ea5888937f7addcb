"""``python -m ops`` is the ``lastmile`` command."""

import sys

from ops.cli import main

sys.exit(main())
