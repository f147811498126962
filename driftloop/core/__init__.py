"""The core: typed models, the configuration tree, statistics, the pure decisions and the loop's
state machine. Imports nothing above it (the layer contract in pyproject.toml)."""
