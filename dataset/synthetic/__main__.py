"""``python -m dataset.synthetic``: see ``dataset.synthetic.cli``."""

from dataset.synthetic.cli import main

main()
