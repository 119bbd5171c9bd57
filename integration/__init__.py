"""The integration tier: boots a real systemd (sandbox.py); imported as `integration.*`."""
