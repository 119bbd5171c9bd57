"""Example services and demos; imported as `examples.*` by the tests (readme_blocks)."""
