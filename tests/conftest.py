import pytest
import timm
import torch

from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME


@pytest.fixture
def tiny_trunk_file(tmp_path):
    """A tiny timm ViT saved as a local .pth, with the reference model that produced it."""
    torch.manual_seed(0)
    ref = timm.create_model(TINY_NAME, num_classes=0, img_size=224, **TINY_KWARGS)
    path = tmp_path / 'tiny_vit.pth'
    torch.save(ref.state_dict(), path)
    return path, ref


@pytest.fixture(params=['cpu', pytest.param('cuda', marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason='no CUDA device'))])
def device(request) -> str:
    """The device a model test runs on: 'cpu', and 'cuda' too where a GPU is available."""
    return request.param


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Build from mmseg's registries, as configs do (a Runner test may have switched scope)."""
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')


def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'slow: takes minutes on a 2-core CPU (deselect with -m "not slow")')
    config.addinivalue_line(
        'markers', 'network: needs the package registry (deselect with -m "not network" on a '
        'machine without one)')
