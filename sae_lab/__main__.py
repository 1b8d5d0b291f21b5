import sys

from sae_lab.cli import main

sys.exit(main())
