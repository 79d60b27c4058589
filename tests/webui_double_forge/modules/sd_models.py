"""modules/sd_models.py: ``model_data.sd_model`` is what forge_clip.move_clip_to_gpu reads."""

from types import SimpleNamespace

model_data = SimpleNamespace(sd_model=None)
