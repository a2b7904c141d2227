#!/usr/bin/env python3
"""Django's command-line utility for the apnsd example project."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Make the apnsd package importable without installing it (clients/python/).
sys.path.insert(0, os.path.dirname(HERE))


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from django.core.management import execute_from_command_line
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
