"""``python -m ailedger`` runs the CLI."""

from ailedger.cli import main

main()
