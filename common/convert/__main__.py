"""``python -m common.convert <subcommand> ...`` (see ``common.convert``)."""
from common.convert import main
from common.errors import run_cli

run_cli(main)
