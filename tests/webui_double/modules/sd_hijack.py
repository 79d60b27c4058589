"""modules/sd_hijack.py: ``model_hijack.fixes`` consumed (and cleared) by ``EmbeddingsWithFixes``; the hijack's
``embedding_db`` (textual_inversion's database over ``cmd_opts.embeddings_dir``)."""

import torch
from modules import devices


class StableDiffusionModelHijack:
    def __init__(self):
        from modules.shared import cmd_opts
        from modules.textual_inversion import textual_inversion

        self.fixes = None
        self.extra_generation_params = {}
        self.embedding_db = textual_inversion.EmbeddingDatabase()
        self.embedding_db.add_embedding_dir(cmd_opts.embeddings_dir)


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
