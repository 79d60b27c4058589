"""A faithful test double of the A1111 v1.10 host (+ sd-webui-animatediff master) for the extension.

Each fake module mirrors the names, signatures, row layouts, call order and grad contexts of the
upstream file it is named after (see ../../shared/reference/host_api.md, "What a faithful test double
must reproduce"); the model is a tiny differentiable SD1.5-shaped toy built from ``ldm/`` (the classes of
Stability-AI/stablediffusion's ``ldm`` package that A1111 loads, under their upstream names). ``install()`` puts
``modules`` and AnimateDiff's ``scripts.animatediff_mm`` / ``scripts.animatediff_infv2v`` into ``sys.modules``.
"""
