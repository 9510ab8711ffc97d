import sys

from inversa.cli.main import main

sys.exit(main())
