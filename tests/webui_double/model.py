"""A tiny differentiable SD1.5-shaped model as A1111 1.10 builds it from ldm (ldm/models/diffusion/ddpm.py
``LatentDiffusion``): apply_model/DiffusionWrapper over ldm's ``UNetModel`` (``ldm/modules/diffusionmodules/
openaimodel.py``, weights requires_grad=True), a causal toy CLIP behind A1111's hijack (EmbeddingsWithFixes; frozen,
as ldm freezes the cond stage), and ldm's ``AutoencoderKL`` (decoder only) as ``first_stage_model``, frozen as
``instantiate_first_stage`` freezes it. The ldm classes are the double's (``ldm/``), at toy sizes."""

import re
import zlib
from types import SimpleNamespace

import torch
from torch import nn

DIM = 32
CHANNELS = 16


class WordTokenizer:
    def __init__(self, vocab=997):
        self.vocab = vocab
        self.bos, self.eos = vocab, vocab + 1

    def ids(self, text):
        return [zlib.crc32(w.encode()) % self.vocab for w in re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower())]


class ToyTextModel(nn.Module):
    """Token embedding -> + positions -> one causal self-attention block (CLIP is causal)."""

    def __init__(self, n_vocab):
        super().__init__()
        self.embeddings = SimpleNamespace(token_embedding=nn.Embedding(n_vocab, DIM))
        self.token_embedding_module = self.embeddings.token_embedding
        self.pos = nn.Parameter(torch.randn(77, DIM) * 0.1)
        self.attn = nn.MultiheadAttention(DIM, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))

    def forward(self, input_ids):
        h = self.embeddings.token_embedding(input_ids) + self.pos[: input_ids.shape[1]]
        n = h.shape[1]
        mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
        h = h + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return h + self.mlp(h)


class ToyTransformer(nn.Module):
    def __init__(self, n_vocab):
        super().__init__()
        self.text_model = ToyTextModel(n_vocab)

    def forward(self, input_ids, output_hidden_states=None):
        return SimpleNamespace(last_hidden_state=self.text_model(input_ids))


def __getattr__(name):
    """``ToyUNet``: the tests' name for the UNet class, ldm's ``UNetModel`` (they patch its forward). Looked up on use,
    as ``ldm`` is importable only once ``webui_host.install_double`` has put the double on ``sys.path``."""
    if name == "ToyUNet":
        from ldm.modules.diffusionmodules.openaimodel import UNetModel

        return UNetModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DiffusionWrapper(nn.Module):
    """ldm/models/diffusion/ddpm.py ``DiffusionWrapper`` (conditioning_key "crossattn") over ldm's ``UNetModel``."""

    def __init__(self):
        super().__init__()
        from ldm.modules.diffusionmodules.openaimodel import UNetModel

        self.diffusion_model = UNetModel(model_channels=CHANNELS, context_dim=DIM)
        self.conditioning_key = "crossattn"

    def forward(self, x, t, c_concat=None, c_crossattn=None):
        return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))


#: the toy VAE's ldm ddconfig: SD1.5's layout (four levels, so 8x upsampling; z 4 channels; RGB out) at ch=4 and
#: ch_mult 1,1,1,2 (SD1.5: 128 and 1,2,4,4), one ResnetBlock per level (SD1.5: three). Small enough that Forge's
#: simulated small GPU (``webui_host.small_forge_gpu``) holds it beside the UNet. ``tanh_out`` (a Decoder option,
#: off in SD1.5) keeps the pixels in [-1, 1], as a trained VAE's are.
VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 4,
                "ch_mult": [1, 1, 1, 2], "num_res_blocks": 0, "attn_resolutions": [], "dropout": 0.0, "tanh_out": True}


class ToySDModel(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        from ldm.models.autoencoder import AutoencoderKL
        from modules import sd_hijack, sd_hijack_clip

        torch.manual_seed(seed)
        tok = WordTokenizer()
        transformer = ToyTransformer(tok.vocab + 2)
        emb = transformer.text_model.embeddings
        emb.token_embedding = sd_hijack.EmbeddingsWithFixes(emb.token_embedding, sd_hijack.model_hijack)
        wrapped = SimpleNamespace(tokenizer=tok, transformer=transformer)
        self.cond_stage_model = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(wrapped, sd_hijack.model_hijack)
        self.text_transformer = transformer  # registered so .parameters() sees it
        self.text_transformer.requires_grad_(False)  # ldm freezes the cond stage
        self.model = DiffusionWrapper()  # UNet keeps requires_grad=True like ldm
        self.first_stage_model = AutoencoderKL(ddconfig=VAE_DDCONFIG, embed_dim=4).requires_grad_(False)
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float())
        self.parameterization = "eps"
        self.scale_factor = 0.18215
        self.cond_stage_key = "txt"
        self.is_sdxl = False
        self.lowvram = False
        self.eval()

    def get_learned_conditioning(self, prompts):
        return self.cond_stage_model(prompts)

    def apply_model(self, x_noisy, t, cond):
        return self.model(x_noisy, t, **cond)

    @torch.no_grad()
    def decode_first_stage(self, z):
        return self.first_stage_model.decode(z / self.scale_factor)
