import importlib.util

import pytest
import torch

from motionprompt.disc.models import build_discriminator
from motionprompt.engine.config import GuidanceConfig
from motionprompt.flow.registry import build_flow
from motionprompt.flow.settings import FlowSettings
from motionprompt.hosts.diffusers.host import DiffusersVideoHost
from motionprompt.hosts.diffusers.models import tiny_model

HAVE_DIFFUSERS = importlib.util.find_spec("diffusers") is not None
DIFFUSERS_FIXTURES = {"model", "host"}  # the tiny diffusers AnimateDiff model and its reference host


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Tests of the diffusers reference host carry the ``diffusers`` marker (those using its fixtures get it
    here), so ``-m "not diffusers"`` selects what applies in a WebUI venv; without diffusers they skip."""
    for item in items:
        if DIFFUSERS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.diffusers)
        if not HAVE_DIFFUSERS and item.get_closest_marker("diffusers"):
            item.add_marker(pytest.mark.skip(reason="needs diffusers (a WebUI venv has none)"))


@pytest.fixture
def one_torch_thread():
    """Two cores shared with other jobs: one torch thread is ~10x faster than two fighting."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def model():
    return tiny_model(seed=0)


@pytest.fixture
def host(model):
    """Weights left trainable on purpose: a leak of .grad onto them must be visible."""
    return DiffusersVideoHost(model, "a white fox running on a rock", freeze_weights=False)


def small_cfg(**kw) -> GuidanceConfig:
    kw.setdefault("flow", FlowSettings(backend="raft_small", size=128, iters=3))
    return GuidanceConfig(**kw).validate()


@pytest.fixture
def flow():
    return build_flow(FlowSettings(backend="raft_small", size=128, iters=3), allow_random=True)


@pytest.fixture
def disc():
    return build_discriminator("cnn", width=8, depth=3)
