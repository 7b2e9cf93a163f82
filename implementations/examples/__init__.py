"""Worked examples of implementations brought by a user."""
