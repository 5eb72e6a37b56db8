import sys

from kubmesh.cli import main

sys.exit(main())
