"""A backend module without members."""

from demessaging import main

_private = 1

if __name__ == "__main__":
    main()
