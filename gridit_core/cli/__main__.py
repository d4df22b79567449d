"""``python -m gridit_core.cli`` (and ``torchrun ... -m gridit_core.cli train ...``)."""

import sys

from gridit_core.cli import main

sys.exit(main())
