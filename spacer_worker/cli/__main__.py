"""``python -m spacer_worker.cli``: the ``spacer-worker`` command."""

import sys

from spacer_worker.cli import main

sys.exit(main())
