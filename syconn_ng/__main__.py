"""`python -m syconn_ng` is the `syconn-ng` command."""

from syconn_ng.cli import main

if __name__ == "__main__":
    main()
