"""modules/paths.py; ``models_path`` is pointed at a temporary folder by the test fixture."""

models_path = "models"
script_path = "."
data_path = "."
