"""Command-line tools. Each module has ``main(argv=None)``; ``tools/<name>.py`` and the ``pointclora-<name>`` console
commands call it."""
