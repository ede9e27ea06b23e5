"""``python -m dnsmaster``."""

import sys

from dnsmaster.cli import main

sys.exit(main())
