"""``python -m scoregen`` runs the command line."""

from scoregen.cli import main

if __name__ == "__main__":
    main()
