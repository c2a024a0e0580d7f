"""`python -m previsit` is the `previsit` command."""

import sys

from previsit.cli import main

sys.exit(main())
