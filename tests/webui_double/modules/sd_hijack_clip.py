"""modules/sd_hijack_clip.py: chunking to 75 tokens + BOS/EOS, embeddings as fixes, process_tokens, "Original" emphasis."""

import math
from collections import namedtuple

import torch
from modules import devices
from modules.shared import opts


class PromptChunk:
    def __init__(self):
        self.tokens = []
        self.multipliers = []
        self.fixes = []


PromptChunkFix = namedtuple("PromptChunkFix", ["offset", "embedding"])


def parse_prompt_attention(text):
    """Enough of prompt_parser.parse_prompt_attention for '(word:1.3)' and plain text."""
    import re

    out = []
    for m in re.finditer(r"\(([^():]+):([0-9.]+)\)|([^()]+)", text):
        if m.group(1) is not None:
            out.append([m.group(1), float(m.group(2))])
        elif m.group(3).strip():
            out.append([m.group(3), 1.0])
    return out or [["", 1.0]]


class FrozenCLIPEmbedderWithCustomWords(torch.nn.Module):
    def __init__(self, wrapped, hijack):
        super().__init__()
        self.wrapped = wrapped
        self.hijack = hijack
        self.chunk_length = 75
        self.tokenizer = wrapped.tokenizer
        self.id_start = wrapped.tokenizer.bos
        self.id_end = wrapped.tokenizer.eos
        self.id_pad = self.id_end
        self.comma_token = None

    def empty_chunk(self):
        chunk = PromptChunk()
        chunk.tokens = [self.id_start] + [self.id_end] * (self.chunk_length + 1)
        chunk.multipliers = [1.0] * (self.chunk_length + 2)
        return chunk

    def get_target_prompt_token_count(self, token_count):
        return math.ceil(max(token_count, 1) / self.chunk_length) * self.chunk_length

    def tokenize(self, texts):
        return [self.tokenizer.ids(t) for t in texts]

    def tokenize_line(self, line):
        parsed = parse_prompt_attention(line) if opts.emphasis != "None" else [[line, 1.0]]
        tokenized = self.tokenize([text for text, _ in parsed])
        chunks, chunk, token_count = [], PromptChunk(), 0

        def next_chunk(is_last=False):
            nonlocal token_count, chunk
            token_count += len(chunk.tokens) if is_last else self.chunk_length
            to_add = self.chunk_length - len(chunk.tokens)
            if to_add > 0:
                chunk.tokens += [self.id_end] * to_add
                chunk.multipliers += [1.0] * to_add
            chunk.tokens = [self.id_start, *chunk.tokens, self.id_end]
            chunk.multipliers = [1.0, *chunk.multipliers, 1.0]
            chunks.append(chunk)
            chunk = PromptChunk()

        for tokens, (_text, weight) in zip(tokenized, parsed, strict=True):
            position = 0
            while position < len(tokens):
                if len(chunk.tokens) == self.chunk_length:
                    next_chunk()
                # textual-inversion embeddings: placeholder ids 0 and a fix whose vectors replace them
                embedding, n_ids = self.hijack.embedding_db.find_embedding_at_position(tokens, position)
                if embedding is not None:
                    if len(chunk.tokens) + embedding.vectors > self.chunk_length:
                        next_chunk()
                    chunk.fixes.append(PromptChunkFix(len(chunk.tokens), embedding))
                    chunk.tokens += [0] * embedding.vectors
                    chunk.multipliers += [weight] * embedding.vectors
                    position += n_ids
                    continue
                chunk.tokens.append(tokens[position])
                chunk.multipliers.append(weight)
                position += 1
        if chunk.tokens or not chunks:
            next_chunk(is_last=True)
        return chunks, token_count

    def forward(self, texts):
        batch_chunks = [self.tokenize_line(t)[0] for t in texts]
        chunk_count = max(len(x) for x in batch_chunks)
        zs = []
        for i in range(chunk_count):
            batch_chunk = [chunks[i] if i < len(chunks) else self.empty_chunk() for chunks in batch_chunks]
            self.hijack.fixes = [x.fixes for x in batch_chunk]
            zs.append(self.process_tokens([x.tokens for x in batch_chunk], [x.multipliers for x in batch_chunk]))
        return torch.hstack(zs)

    def process_tokens(self, remade_batch_tokens, batch_multipliers):
        tokens = torch.asarray(remade_batch_tokens).to(devices.device)
        z = self.encode_with_transformers(tokens)
        # sd_emphasis.EmphasisOriginal.after_transformers: weight, then restore the mean
        multipliers = torch.asarray(batch_multipliers).to(devices.device)
        original_mean = z.mean()
        z = z * multipliers.reshape((*multipliers.shape, 1)).expand(z.shape)
        new_mean = z.mean()
        return z * (original_mean / new_mean)

    def encode_with_transformers(self, tokens):
        outputs = self.wrapped.transformer(input_ids=tokens, output_hidden_states=-opts.CLIP_stop_at_last_layers)
        return outputs.last_hidden_state

    def encode_embedding_init_text(self, init_text, nvpt):
        embedding_layer = self.wrapped.transformer.text_model.embeddings
        ids = torch.tensor([self.tokenizer.ids(init_text)[:nvpt]], dtype=torch.long)
        return embedding_layer.token_embedding.wrapped(ids.to(devices.device)).squeeze(0)
