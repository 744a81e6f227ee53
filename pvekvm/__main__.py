"""``python -m pvekvm``: the operator CLI (pvekvm/apps/cli), launched."""

import sys

from pvekvm.apps.cli.main import main

sys.exit(main())
