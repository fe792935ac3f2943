"""`python -m nnc` is the `nnc` command."""

from nnc.compiler.cli import main

raise SystemExit(main())
