"""`python -m stream_risk ...` is `stream-risk ...`."""

import sys

from stream_risk.cli import main

sys.exit(main())
