"""``python -m imagepatch``: the same as the ``imagepatch`` command."""

import sys

from imagepatch.cli import main

sys.exit(main())
