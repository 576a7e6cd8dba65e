"""``python -m fraudcep_cli``: the same as the ``fraudcep`` command."""

from fraudcep_cli.main import main

raise SystemExit(main())
