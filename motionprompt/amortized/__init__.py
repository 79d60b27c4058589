"""Amortized MotionPrompt: one motion token learned once over many prompts, seeds and timesteps, then used
at no per-sample cost (or as the start of a shorter per-sample refinement).

``token_file``: the exported file, a textual-inversion embedding the WebUI loads from ``embeddings/``, with
our training record in its header. ``train``: the resumable trainer (``python -m motionprompt token-train``).
"""
