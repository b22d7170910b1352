"""``python -m demo``: the same as ``mmp-demo``."""
import sys

from demo.run import main

sys.exit(main())
