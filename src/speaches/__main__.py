"""`python -m speaches serve`: the same as the `speaches` command."""

from speaches.cli import main

main()
