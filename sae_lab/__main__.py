from sae_lab.cli import main
import sys
sys.exit(main())
