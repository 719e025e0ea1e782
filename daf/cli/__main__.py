"""`python -m daf.cli`: the same command line as the `daf` console script."""

from daf.cli import app

if __name__ == "__main__":
    app()
