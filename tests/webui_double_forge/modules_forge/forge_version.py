"""modules_forge/forge_version.py at Forge tag ``previous``."""

version = "0.0.17v1.8.0rc"
