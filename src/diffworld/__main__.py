"""`python -m diffworld` runs the command line."""

from diffworld.cli import main

main()
