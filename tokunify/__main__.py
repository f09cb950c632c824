import sys

from tokunify.cli import main

sys.exit(main())
