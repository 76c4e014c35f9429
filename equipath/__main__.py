import sys

from equipath.cli import main

sys.exit(main())
