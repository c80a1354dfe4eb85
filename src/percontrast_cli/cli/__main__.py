"""`python -m percontrast_cli.cli`: the console script's entry point."""

from percontrast_cli.cli.main import main

main()
