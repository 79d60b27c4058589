"""The WebUI side of MotionPrompt: the only package that imports ``modules`` (A1111/Forge) and gradio.

Everything here imports ``modules`` lazily, inside functions, so the package can be imported (and
tested against a host double) anywhere.
"""
