"""modules_forge/forge_clip.py (Forge ``previous``): A1111's CLIP wrapper whose encode first loads the CLIP patcher
through model_management (``move_clip_to_gpu``)."""

from ldm_patched.modules import model_management
from modules import sd_models
from modules.sd_hijack_clip import FrozenCLIPEmbedderWithCustomWords
from modules.shared import opts


def move_clip_to_gpu():
    if sd_models.model_data.sd_model is None:
        print("Error: CLIP called before SD is loaded!")
        return
    model_management.load_model_gpu(sd_models.model_data.sd_model.forge_objects.clip.patcher)


class CLIP_SD_15_L(FrozenCLIPEmbedderWithCustomWords):
    def encode_with_transformers(self, tokens):
        move_clip_to_gpu()
        # upstream also moves text_model.embeddings to tokens.device: CPU only here
        outputs = self.wrapped.transformer(input_ids=tokens, output_hidden_states=-opts.CLIP_stop_at_last_layers)
        return outputs.last_hidden_state
