"""``python -m train`` runs the `arkd` command."""

from train.cli import main

raise SystemExit(main())
