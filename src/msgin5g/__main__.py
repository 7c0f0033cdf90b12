"""``python -m msgin5g``."""

from msgin5g.cli import main

raise SystemExit(main())
