"""``python -m experiments.isp_distillation``: the command line of :mod:`.cli`."""

import sys

from .cli import main

sys.exit(main())
