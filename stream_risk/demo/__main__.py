"""`python -m stream_risk.demo [--duration S] [--http-port P] ...`: `stream-risk demo`."""

import sys

from stream_risk.demo.cli import main

sys.exit(main())
