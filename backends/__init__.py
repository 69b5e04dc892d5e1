"""The two web stacks Stackgate fronts: ``django_site`` and ``flask_site``."""
