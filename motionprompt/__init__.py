"""MotionPrompt engine: optical-flow guided prompt-token optimization for video diffusion.

Pure torch; imports neither the WebUI (``modules``) nor gradio. Hosts plug in through
``motionprompt.engine.host.GuidanceHost``.
"""

__version__ = "0.1.0"
