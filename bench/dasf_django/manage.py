#!/usr/bin/env python3
"""Django manage.py for the dasf_django bench project (needs DASF_DJANGO_DB set)."""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dasf_django.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
