"""ldm/models/autoencoder.py ``AutoencoderKL`` (Stability-AI/stablediffusion, as A1111 1.10 loads it): the SD1.5
``first_stage_model``. ``decode(z)`` = ``post_quant_conv`` (1x1, ``embed_dim`` -> ``z_channels``) then ``decoder``
(``ldm.modules.diffusionmodules.model.Decoder``). The double has no encoder: nothing in txt2img encodes."""

from ldm.modules.diffusionmodules.model import Decoder
from torch import nn


class AutoencoderKL(nn.Module):
    def __init__(self, ddconfig, embed_dim):
        super().__init__()
        self.decoder = Decoder(**ddconfig)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.embed_dim = embed_dim

    def decode(self, z):
        z = self.post_quant_conv(z)
        return self.decoder(z)
