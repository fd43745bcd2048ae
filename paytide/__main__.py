"""``python -m paytide`` is the ``paytide`` command."""

import sys

from paytide.cli import main

sys.exit(main())
