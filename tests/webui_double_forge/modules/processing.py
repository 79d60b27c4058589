"""modules/processing.py of Forge ``previous``: hook order as A1111's, but the batch loop runs under
``torch.inference_mode()``; ``p.sd_model.forge_objects`` is reset from ``forge_objects_original`` before each
batch and from ``forge_objects_after_applying_lora`` before ``process_batch`` and again before
``process_before_every_sampling`` (so UnetPatcher clones made there last one sampling); alphas_cumprod modifiers
(AnimateDiff's, added in process_batch) are applied to ``sd_model.alphas_cumprod`` and the model's sigmas around
``p.sample``; the decode is ``sd_model.decode_first_stage`` (decorated ``torch.inference_mode``)."""

import os

import torch
from modules import devices, prompt_parser, sd_samplers_kdiffusion, sd_samplers_timesteps, shared
from modules.scripts import PostSampleArgs
from modules.sd_hijack import model_hijack


class StableDiffusionProcessing:
    cached_uc = [None, None]  # noqa: RUF012  class-level on purpose, like upstream
    cached_c = [None, None]  # noqa: RUF012

    def __init__(self, sd_model=None, prompt="", negative_prompt="", seed=1, steps=8, cfg_scale=7.0, width=64,
                 height=64, batch_size=1, n_iter=1, sampler_name="Euler", scripts=None, script_args=None,
                 outpath_samples="outputs/txt2img-images"):
        self.sd_model = sd_model
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.seed, self.steps, self.cfg_scale = seed, steps, cfg_scale
        self.width, self.height = width, height
        self.batch_size, self.n_iter = batch_size, n_iter
        self.sampler_name = sampler_name
        self.outpath_samples = outpath_samples
        self.scripts = scripts
        self.script_args = list(script_args or [])
        self.extra_generation_params = {}
        self.comments = {}
        self.is_api = False
        self.is_hr_pass = False
        self.do_not_reload_embeddings = False
        self.c = self.uc = None
        self.modified_noise = None

    def comment(self, text):
        self.comments[text] = 1

    def setup_prompts(self):
        prompts = self.prompt if isinstance(self.prompt, list) else self.batch_size * self.n_iter * [self.prompt]
        self.all_prompts = prompts
        self.all_negative_prompts = [self.negative_prompt] * len(prompts)
        self.all_seeds = [int(self.seed) + i for i in range(len(prompts))]

    def get_conds_with_caching(self, function, required_prompts, steps, caches):
        for cache in caches:
            if cache[0] is not None and cache[0] == (tuple(required_prompts), steps):
                return cache[1]
        cache = caches[0]
        with devices.autocast():
            cache[1] = function(shared.sd_model, required_prompts, steps)
        cache[0] = (tuple(required_prompts), steps)
        return cache[1]

    def setup_conds(self):
        self.uc = self.get_conds_with_caching(prompt_parser.get_learned_conditioning, self.negative_prompts,
                                              self.steps, [self.cached_uc])
        self.c = self.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, self.prompts,
                                             self.steps, [self.cached_c])


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def txt2img_image_conditioning(self, x):
        return x.new_zeros(x.shape[0], 5, 1, 1)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        if self.sampler_name == "DDIM":
            self.sampler = sd_samplers_timesteps.CompVisSampler(self.sampler_name, self.sd_model)
        else:
            self.sampler = sd_samplers_kdiffusion.KDiffusionSampler(self.sampler_name, self.sd_model)
        gen = torch.Generator().manual_seed(int(seeds[0]))
        x = torch.randn((len(seeds), 4, self.height // 8, self.width // 8), generator=gen)
        self.sd_model.forge_objects = self.sd_model.forge_objects_after_applying_lora.shallow_copy()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning)
        if self.modified_noise is not None:
            x, self.modified_noise = self.modified_noise, None
        return self.sampler.sample(self, x, conditioning, unconditional_conditioning,
                                   image_conditioning=self.txt2img_image_conditioning(x))


class Processed:
    def __init__(self, p, images, infotexts):
        self.images = images
        self.infotexts = infotexts
        self.comments = "".join(f"{c}\n" for c in p.comments)
        self.extra_generation_params = dict(p.extra_generation_params)


def create_infotext(p, index=0):
    params = {"Steps": p.steps, "Sampler": p.sampler_name, "CFG scale": p.cfg_scale, "Seed": p.all_seeds[index],
              **p.extra_generation_params}
    text = ", ".join(f"{k}: {_quote(v)}" for k, v in params.items() if v is not None)
    return f"{p.all_prompts[index]}\nNegative prompt: {p.all_negative_prompts[index]}\n{text}"


def _quote(v):
    v = str(v)
    return f'"{v}"' if "," in v or ":" in v else v


def process_images(p):
    if p.scripts is not None:
        p.scripts.before_process(p)
    return process_images_inner(p)


def process_images_inner(p):
    p.setup_prompts()
    if os.path.exists(shared.cmd_opts.embeddings_dir) and not p.do_not_reload_embeddings:
        model_hijack.embedding_db.load_textual_inversion_embeddings()
    if p.scripts is not None:
        p.scripts.process(p)
    images, infotexts, samples_out = [], [], []
    with torch.inference_mode():
        for n in range(p.n_iter):
            if shared.state.interrupted:
                break
            p.sd_model.forge_objects = p.sd_model.forge_objects_original.shallow_copy()
            sl = slice(n * p.batch_size, (n + 1) * p.batch_size)
            p.prompts, p.negative_prompts, p.seeds = p.all_prompts[sl], p.all_negative_prompts[sl], p.all_seeds[sl]
            if p.scripts is not None:
                p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.seeds)
            p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
            if p.scripts is not None:
                p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.seeds)
            p.setup_conds()
            sampling = p.sd_model.forge_objects.unet.model.model_sampling
            p.sd_model.alphas_cumprod = p.sd_model.alphas_cumprod_original
            modifiers = p.sd_model.forge_objects.unet.model_options.get("alphas_cumprod_modifiers", [])
            backup = None
            if modifiers:
                backup = p.sd_model.alphas_cumprod
                for modifier in modifiers:
                    p.sd_model.alphas_cumprod = modifier(p.sd_model.alphas_cumprod)
                sampling.set_sigmas(((1 - p.sd_model.alphas_cumprod) / p.sd_model.alphas_cumprod) ** 0.5)
            samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.seeds,
                               subseed_strength=0, prompts=p.prompts)
            if backup is not None:
                p.sd_model.alphas_cumprod = backup
                sampling.set_sigmas(((1 - p.sd_model.alphas_cumprod) / p.sd_model.alphas_cumprod) ** 0.5)
            if p.scripts is not None:
                ps = PostSampleArgs(samples)
                p.scripts.post_sample(p, ps)
                samples = ps.samples
            x = torch.clamp((p.sd_model.decode_first_stage(samples).float() + 1.0) / 2.0, min=0.0, max=1.0)
            if p.scripts is not None:
                p.scripts.postprocess_batch(p, x, batch_number=n)
            samples_out.append(samples)
            for i in range(x.shape[0]):
                images.append(x[i])
                infotexts.append(create_infotext(p, n * p.batch_size + i))
    res = Processed(p, images, infotexts)
    res.samples = torch.cat(samples_out) if samples_out else None
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res
