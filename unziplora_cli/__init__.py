"""The ``unzip`` / ``unziplora`` command line: a thin Typer layer over the ``unziplora`` library."""
