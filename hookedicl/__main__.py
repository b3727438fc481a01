"""`python -m hookedicl ...` runs the command line (the same as `hookedicl ...`)."""

from .cli import app

app(prog_name="hookedicl")
