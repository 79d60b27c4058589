"""modules/prompt_parser.py: scheduled/multicond conditioning containers; reconstruct_* build NEW tensors."""

from collections import namedtuple

import torch

ScheduledPromptConditioning = namedtuple("ScheduledPromptConditioning", ["end_at_step", "cond"])
ComposableScheduledPromptConditioning = namedtuple("ComposableScheduledPromptConditioning", ["schedules", "weight"])


class DictWithShape(dict):
    def __init__(self, x, shape=None):
        super().__init__()
        self.update(x)

    @property
    def shape(self):
        return self["crossattn"].shape


class MulticondLearnedConditioning:
    def __init__(self, shape, batch):
        self.shape = shape
        self.batch = batch


def get_learned_conditioning(model, prompts, steps):
    """One schedule per prompt (no prompt editing in the double); identical prompts share one tensor."""
    cache = {}
    res = []
    for prompt in prompts:
        if prompt not in cache:
            cond = model.get_learned_conditioning([prompt])[0]
            cache[prompt] = [ScheduledPromptConditioning(steps, cond)]
        res.append(cache[prompt])
    return res


def get_multicond_learned_conditioning(model, prompts, steps):
    """``AND`` splits a prompt into weighted sub-prompts (weight 1 each in the double)."""
    res_indexes, prompt_flat = [], []
    for prompt in prompts:
        subs = [s.strip() for s in prompt.split(" AND ")]
        res_indexes.append(list(range(len(prompt_flat), len(prompt_flat) + len(subs))))
        prompt_flat += subs
    learned = get_learned_conditioning(model, prompt_flat, steps)
    batch = [[ComposableScheduledPromptConditioning(learned[i], 1.0) for i in idx] for idx in res_indexes]
    return MulticondLearnedConditioning(shape=(len(prompts),), batch=batch)


def _entry(schedules, step):
    for entry in schedules:
        if step <= entry.end_at_step:
            return entry.cond
    return schedules[-1].cond


def reconstruct_cond_batch(c, current_step):
    param = c[0][0].cond
    res = torch.zeros((len(c), *param.shape), device=param.device, dtype=param.dtype)
    for i, schedules in enumerate(c):
        res[i] = _entry(schedules, current_step)
    return res


def reconstruct_multicond_batch(c, current_step):
    param = c.batch[0][0].schedules[0].cond
    tensors, conds_list = [], []
    for composable_prompts in c.batch:
        conds_for_batch = []
        for composable_prompt in composable_prompts:
            conds_for_batch.append((len(tensors), composable_prompt.weight))
            tensors.append(_entry(composable_prompt.schedules, current_step))
        conds_list.append(conds_for_batch)
    return conds_list, torch.stack(tensors).to(device=param.device, dtype=param.dtype)
