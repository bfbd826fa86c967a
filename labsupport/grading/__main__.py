"""``python -m labsupport.grading``: the same as ``labsupport-grade``."""

import sys

from .cli import main

sys.exit(main())
