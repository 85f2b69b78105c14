"""``python -m unziplora_cli`` behaves like the ``unziplora`` command (never passes through)."""

from unziplora_cli.app import main_unziplora

main_unziplora()
