"""``python -m conformance`` is the ``lstm-conformance`` command."""

import sys

from .cli import main

sys.exit(main())
