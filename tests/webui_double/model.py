"""A tiny differentiable SD1.5-shaped model: ldm-like apply_model/DiffusionWrapper, a causal toy CLIP
behind A1111's hijack (EmbeddingsWithFixes), a conv VAE decoder, UNet weights with requires_grad=True."""

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


class ToyUNet(nn.Module):
    """conv + timestep + cross-attention on the text rows; AnimateDiff's injection adds ``motion``."""

    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(4, CHANNELS, 3, padding=1)
        self.time = nn.Linear(1, CHANNELS)
        self.q = nn.Linear(CHANNELS, CHANNELS)
        self.kv = nn.Linear(DIM, 2 * CHANNELS)
        self.conv_out = nn.Conv2d(CHANNELS, 4, 3, padding=1)
        self.motion = None  # a temporal module, set by the fake AnimateDiff's inject()

    def forward(self, x, timesteps, context):
        h = self.conv_in(x) + self.time(timesteps.to(x.dtype).view(-1, 1) / 1000.0)[:, :, None, None]  # ldm: t_emb.to(dtype)
        b, c, hh, ww = h.shape
        tokens = h.flatten(2).transpose(1, 2)
        k, v = self.kv(context.to(h.dtype)).chunk(2, dim=-1)
        attn = torch.softmax(self.q(tokens) @ k.transpose(1, 2) / CHANNELS**0.5, dim=-1)
        h = h + 0.5 * (attn @ v).transpose(1, 2).reshape(b, c, hh, ww)
        if self.motion is not None:
            h = self.motion(h)
        return self.conv_out(torch.nn.functional.silu(h))


class DiffusionWrapper(nn.Module):
    def __init__(self):
        super().__init__()
        self.diffusion_model = ToyUNet()
        self.conditioning_key = "crossattn"

    def forward(self, x, t, c_concat=None, c_crossattn=None):
        return self.diffusion_model(x, t, context=torch.cat(c_crossattn, 1))


class ToyDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.SiLU(), nn.Upsample(scale_factor=8),
                                 nn.Conv2d(8, 3, 3, padding=1))

    def decode(self, z):
        return torch.tanh(self.net(z))


class ToySDModel(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
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
        self.first_stage_model = ToyDecoder().requires_grad_(False)
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
