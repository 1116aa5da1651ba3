"""`python -m cadenza` runs the CLI."""

from cadenza.cli import main

main()
