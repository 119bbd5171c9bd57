"""The benchmarks (`make bench`): run as scripts from the venv, or imported as `bench.*`."""
