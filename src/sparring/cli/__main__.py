"""``python -m sparring.cli``: the same as the ``sparring`` command."""

from sparring.cli import main

if __name__ == "__main__":
    main()
