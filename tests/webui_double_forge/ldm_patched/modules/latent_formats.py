"""ldm_patched/modules/latent_formats.py: SD1.5's latent scale."""


class SD15:
    def __init__(self, scale_factor=0.18215):
        self.scale_factor = scale_factor

    def process_in(self, latent):
        return latent * self.scale_factor

    def process_out(self, latent):
        return latent / self.scale_factor
