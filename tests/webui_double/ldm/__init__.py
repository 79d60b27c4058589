"""Stability-AI/stablediffusion's ``ldm`` package as A1111 1.10 imports it (``repositories/
stable-diffusion-stability-ai`` on ``sys.path``): only the classes the WebUI double's toy SD1.5 model is made of,
under upstream's module paths and class names, at toy sizes."""
