"""A small world where MotionPrompt can be measured: procedural clips with captions, a toy
text-to-video model trained on them, and ground-truth measures of what the clips show.

No pretrained video diffusion weights can be downloaded on our machines, so the effect of guidance is
shown here, through the production code path (tokens -> CLIP -> UNetMotionModel -> x0 -> VAE -> flow -> D).
"""

from .source import register

register()  # ``--model toy`` and the toy world's cases, for generate, token-train and evaluate
