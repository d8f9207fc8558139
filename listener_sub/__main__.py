"""`python -m listener_sub` is the `listener-sub` command."""

from listener_sub.cli import main

main()
