"""Shared fixtures: personas and factories live in tests/factories.py and tests/personas.py."""
