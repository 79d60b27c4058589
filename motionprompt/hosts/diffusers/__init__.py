"""Reference host: diffusers' AnimateDiff (UNetMotionModel + AutoencoderKL + CLIP text model).

Proves the engine on a real video-diffusion architecture without the WebUI, and powers the CLI's
``generate`` and the demo. diffusers/transformers are imported lazily by the modules here.
"""
