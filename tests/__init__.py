"""The hermetic tier; shared helpers in tests/support.py."""
