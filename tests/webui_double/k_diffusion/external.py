"""k_diffusion/external.py: CompVisDenoiser wraps an ldm-style model with ``alphas_cumprod``/``apply_model``."""

import torch


class CompVisDenoiser(torch.nn.Module):
    """k_diffusion.external.CompVisDenoiser: x0 = x - sigma * eps(x * c_in, t(sigma))."""

    def __init__(self, model):
        super().__init__()
        self.inner_model = model
        ac = model.alphas_cumprod
        self.register_buffer("sigmas", ((1 - ac) / ac) ** 0.5)
        self.register_buffer("log_sigmas", self.sigmas.log())

    def sigma_to_t(self, sigma):
        log_sigma = sigma.log()
        dists = log_sigma - self.log_sigmas[:, None]
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape)

    def get_scalings(self, sigma):
        return -sigma, 1 / (sigma**2 + 1) ** 0.5

    def forward(self, input, sigma, **kwargs):
        c_out, c_in = [s[:, None, None, None] for s in self.get_scalings(sigma)]
        eps = self.inner_model.apply_model(input * c_in, self.sigma_to_t(sigma), **kwargs)
        return input + eps * c_out
