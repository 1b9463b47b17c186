import pytest
import timm
import torch

from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME, TINY_ROPE_KWARGS, TINY_ROPE_NAME


@pytest.fixture
def tiny_trunk_file(tmp_path):
    """A tiny timm ViT saved as a local .pth, with the reference model that produced it."""
    torch.manual_seed(0)
    ref = timm.create_model(TINY_NAME, num_classes=0, img_size=224, **TINY_KWARGS)
    path = tmp_path / 'tiny_vit.pth'
    torch.save(ref.state_dict(), path)
    return path, ref


def randomised_rope_trunk(name: str = TINY_ROPE_NAME, seed: int = 0, **kwargs):
    """A tiny timm Eva (DINOv3-style) with random LayerScale and q/v biases (timm starts them at
    a constant and zero), in eval mode."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=0, dynamic_img_size=True,
                              dynamic_img_pad=True,
                              **{**TINY_ROPE_KWARGS, "img_size": 64, **kwargs})
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(('gamma_1', 'gamma_2')):
                p.uniform_(0.2, 0.8)
            elif n.endswith(('q_bias', 'v_bias')):
                p.normal_(0, 0.3)
    return model.eval()


@pytest.fixture
def rope_trunk_file(tmp_path):
    """A tiny DINOv3-style trunk (``TINY_ROPE_NAME``) with random LayerScale and biases, saved
    as a local .pth, with the reference model."""
    ref = randomised_rope_trunk()
    path = tmp_path / 'tiny_dinov3.pth'
    torch.save(ref.state_dict(), path)
    return path, ref


# the kwargs that build a backbone on each family's tiny trunk (with img_size 64)
TRUNKS = dict(vit=dict(model_name=TINY_NAME, model_kwargs=TINY_KWARGS),
              dinov3=dict(model_name=TINY_ROPE_NAME, model_kwargs=TINY_ROPE_KWARGS))


@pytest.fixture(params=sorted(TRUNKS))
def family_trunk(request, tiny_trunk_file, rope_trunk_file):
    """(backbone kwargs naming the trunk and its local file) for a tiny trunk of each family."""
    path, _ = tiny_trunk_file if request.param == 'vit' else rope_trunk_file
    return dict(TRUNKS[request.param], pretrained=str(path))


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
