"""Command-line tools of voxtral-oracle (installed as ``oracle_tools``); ``voxtral-oracle`` is cli.main."""
