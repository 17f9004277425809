"""`python -m trainjob`: the same as the `train` command."""

from trainjob.cli import main

main()
