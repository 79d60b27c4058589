"""modules/textual_inversion/textual_inversion.py (A1111 v1.10.1), the loading half: which files become
embeddings, under which name, and how a prompt finds them.

Rules as upstream applies them (re-expressed, not copied): ``load_from_file`` reads ``.safetensors`` with
``safetensors.torch.load_file``; ``create_embedding_from_data`` takes a ``string_to_param`` dict (.pt files),
else a ``clip_g``+``clip_l`` pair (SDXL), else a dict whose first value is a tensor and which must hold
exactly one key ("embedding file has multiple terms in it"), a 1-D tensor counting as one vector; the width is
the last dimension, and an embedding whose width differs from ``encode_embedding_init_text(",", 1).shape[1]``
goes to ``skipped_embeddings``. The name is the file name without its extension, registered under the ids
the model's tokenizer gives it; ``find_embedding_at_position`` returns the longest registered id sequence at
a prompt position. Pickled .pt/.bin files are not opened by the double.

The database as ``model_hijack`` holds it: folders added with ``add_embedding_dir`` (``cmd_opts.embeddings_dir`` at
start), each a ``DirWithTextualInversionEmbeddings`` that has changed when the folder's mtime is newer than at the last
load; ``load_textual_inversion_embeddings(force_reload=False)`` returns at once unless forced or a folder changed,
else clears the lookups, takes the expected width from ``shared.sd_model`` and loads every folder recursively (empty
files skipped), registering with ``shared.sd_model``'s tokenizer. ``loads`` counts the loads that ran (a test hook).
"""

import os

import torch
from modules import devices, shared


class Embedding:
    def __init__(self, vec, name, step=None):
        self.vec, self.name, self.step = vec, name, step
        self.shape = None
        self.vectors = 0
        self.filename = None
        self.shorthash = None


def create_embedding_from_data(data, name, filename="unknown embedding file", filepath=None):
    if "string_to_param" in data:
        params = data["string_to_param"]
        assert len(params) == 1, "embedding file has multiple terms in it"
        vec = next(iter(params.values())).detach().to(devices.device, dtype=torch.float32)
        shape, vectors = vec.shape[-1], vec.shape[0]
    elif isinstance(data, dict) and "clip_g" in data and "clip_l" in data:
        vec = {k: v.detach().to(devices.device, dtype=torch.float32) for k, v in data.items()}
        shape, vectors = data["clip_g"].shape[-1] + data["clip_l"].shape[-1], data["clip_g"].shape[0]
    elif isinstance(data, dict) and isinstance(next(iter(data.values())), torch.Tensor):
        assert len(data) == 1, "embedding file has multiple terms in it"
        emb = next(iter(data.values()))
        if emb.dim() == 1:
            emb = emb.unsqueeze(0)
        vec = emb.detach().to(devices.device, dtype=torch.float32)
        shape, vectors = vec.shape[-1], vec.shape[0]
    else:
        raise Exception(f"Couldn't identify {filename} as neither textual inversion embedding nor diffuser concept.")
    embedding = Embedding(vec, name)
    embedding.vectors, embedding.shape, embedding.filename = vectors, shape, filepath
    return embedding


class DirWithTextualInversionEmbeddings:
    def __init__(self, path):
        self.path = path
        self.mtime = None

    def has_changed(self):
        if not os.path.isdir(self.path):
            return False
        mtime = os.path.getmtime(self.path)
        return self.mtime is None or mtime > self.mtime

    def update(self):
        if os.path.isdir(self.path):
            self.mtime = os.path.getmtime(self.path)


class EmbeddingDatabase:
    loads = 0

    def __init__(self):
        self.ids_lookup = {}
        self.word_embeddings = {}
        self.skipped_embeddings = {}
        self.expected_shape = -1
        self.embedding_dirs = {}

    def add_embedding_dir(self, path):
        self.embedding_dirs[path] = DirWithTextualInversionEmbeddings(path)

    def clear_embedding_dirs(self):
        self.embedding_dirs.clear()

    def register_embedding(self, embedding, model):
        ids = model.cond_stage_model.tokenize([embedding.name])[0]
        entries = [e for e in self.ids_lookup.get(ids[0], []) if e[1].name != embedding.name] + [(ids, embedding)]
        self.ids_lookup[ids[0]] = sorted(entries, key=lambda e: len(e[0]), reverse=True)
        self.word_embeddings[embedding.name] = embedding
        return embedding

    def get_expected_shape(self):
        return shared.sd_model.cond_stage_model.encode_embedding_init_text(",", 1).shape[1]

    def load_from_file(self, path, filename):
        import safetensors.torch

        name, ext = os.path.splitext(filename)
        if ext.upper() != ".SAFETENSORS":
            return
        data = safetensors.torch.load_file(path, device="cpu")
        embedding = create_embedding_from_data(data, name, filename=filename, filepath=path)
        if self.expected_shape == -1 or self.expected_shape == embedding.shape:
            self.register_embedding(embedding, shared.sd_model)
        else:
            self.skipped_embeddings[name] = embedding

    def load_from_dir(self, embdir):
        if not os.path.isdir(embdir.path):
            return
        for root, _dirs, files in os.walk(embdir.path, followlinks=True):
            for fn in files:
                path = os.path.join(root, fn)
                if os.stat(path).st_size:
                    self.load_from_file(path, fn)

    def load_textual_inversion_embeddings(self, force_reload=False):
        if not force_reload and not any(d.has_changed() for d in self.embedding_dirs.values()):
            return
        EmbeddingDatabase.loads += 1
        self.ids_lookup.clear()
        self.word_embeddings.clear()
        self.skipped_embeddings.clear()
        self.expected_shape = self.get_expected_shape()
        for embdir in self.embedding_dirs.values():
            self.load_from_dir(embdir)
            embdir.update()
        ordered = sorted(self.word_embeddings.values(), key=lambda e: e.name.lower())
        self.word_embeddings.clear()
        self.word_embeddings.update({e.name: e for e in ordered})

    def find_embedding_at_position(self, tokens, offset):
        for ids, embedding in self.ids_lookup.get(tokens[offset], []):
            if tokens[offset:offset + len(ids)] == ids:
                return embedding, len(ids)
        return None, None
