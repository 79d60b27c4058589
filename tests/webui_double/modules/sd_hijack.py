"""modules/sd_hijack.py: ``model_hijack.fixes`` consumed (and cleared) by ``EmbeddingsWithFixes``."""

import torch
from modules import devices


class EmbeddingDatabase:
    """textual_inversion.EmbeddingDatabase as the hijack holds it; ``load_textual_inversion_embeddings(force_reload)``
    re-reads the embedding folders (upstream: when one changed, or always with force_reload) — here it counts."""

    reloads = 0

    def find_embedding_at_position(self, tokens, offset):
        return None, None

    def load_textual_inversion_embeddings(self, force_reload=False):
        if force_reload:
            EmbeddingDatabase.reloads += 1


class StableDiffusionModelHijack:
    def __init__(self):
        self.fixes = None
        self.embedding_db = EmbeddingDatabase()
        self.extra_generation_params = {}


model_hijack = StableDiffusionModelHijack()


class EmbeddingsWithFixes(torch.nn.Module):
    """Splices each fix's ``embedding.vec`` at positions offset+1 .. offset+len with torch.cat (differentiable)."""

    def __init__(self, wrapped, embeddings):
        super().__init__()
        self.wrapped = wrapped
        self.embeddings = embeddings

    def forward(self, input_ids):
        batch_fixes = self.embeddings.fixes
        self.embeddings.fixes = None
        inputs_embeds = self.wrapped(input_ids)
        if batch_fixes is None or len(batch_fixes) == 0 or max(len(x) for x in batch_fixes) == 0:
            return inputs_embeds
        vecs = []
        for fixes, tensor in zip(batch_fixes, inputs_embeds, strict=True):
            for offset, embedding in fixes:
                vec = embedding.vec
                emb = devices.cond_cast_unet(vec)
                emb_len = min(tensor.shape[0] - offset - 1, emb.shape[0])
                tensor = torch.cat([tensor[0 : offset + 1], emb[0:emb_len], tensor[offset + 1 + emb_len :]]).to(
                    dtype=inputs_embeds.dtype)
            vecs.append(tensor)
        return torch.stack(vecs)
