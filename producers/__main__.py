"""``python -m producers`` — see :mod:`producers.cli`; ``watch`` is :mod:`producers.watch`."""

import sys

if sys.argv[1:2] == ["watch"]:
    from producers.watch import main as watch

    sys.exit(watch(sys.argv[2:]))

from producers.cli import main

sys.exit(main())
