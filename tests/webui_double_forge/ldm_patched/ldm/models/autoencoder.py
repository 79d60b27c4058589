"""ldm_patched/ldm/models/autoencoder.py (Forge ``previous``) ``AutoencoderKL``, the ``first_stage_model`` that
``sd.VAE`` builds for SD1.5 (``AutoencoderKL(ddconfig=ddconfig, embed_dim=4)``; upstream through
``AutoencodingEngineLegacy``). ``decode(z, **decoder_kwargs)``, with ``max_batch_size`` None as ``sd.VAE`` builds
it: ``post_quant_conv`` then ``decoder`` (``ldm_patched.ldm.modules.diffusionmodules.model.Decoder``). The double
has no encoder and no regularizer: nothing in txt2img encodes."""

from ldm_patched.ldm.modules.diffusionmodules.model import Decoder
from torch import nn


class AutoencoderKL(nn.Module):
    def __init__(self, ddconfig, embed_dim):
        super().__init__()
        self.max_batch_size = None
        self.decoder = Decoder(**ddconfig)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.embed_dim = embed_dim
        self.downscale_ratio = 8
        self.latent_channels = 4

    def decode(self, z, **decoder_kwargs):
        dec = self.post_quant_conv(z)
        return self.decoder(dec, **decoder_kwargs)
