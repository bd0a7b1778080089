import sys

from bluelm_v.cli import main

sys.exit(main())
