#!/usr/bin/env python
"""Django's command-line utility for the Stackgate Django site.

Runnable as ``python backends/django_site/manage.py …`` from anywhere: the
project root goes on ``sys.path`` so ``backends.django_site`` imports.
"""

import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    sys.path.insert(0, str(PROJECT_ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backends.django_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
