"""A checkpoint loads only into the model it was trained for, on every path a user loads one:
our tools/test.py and tools/train.py (--resume, load_from), mmseg's stock test.py and train.py,
and mmseg.apis.init_model and MMSegInferencer in a fresh interpreter.

Refused: another frozen trunk of the same architecture, another backbone type with the same keys
and shapes (a CVPT checkpoint into a VPT-Deep config), a head of another shape (num_classes,
channels). Loaded: the right config and trunk, another trunk with allow_other_trunk=True (with a
warning), a checkpoint written before the provenance record (one warning), and an exported full
checkpoint without the trunk file."""
import glob
import json
import os.path as osp
import subprocess
import sys

import cv2
import mmseg
import numpy as np
import pytest
import torch

import mmseg_prompt  # noqa: F401  (the weights-only allow-list for training checkpoints)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(REPO, 'configs/example/cvpt_tiny_ade20k_synthetic.py')
STOCK = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools')
TOOLS = dict(ours=osp.join(REPO, 'tools'), stock=STOCK)
REFUSED = 'CheckpointMismatchError'


def run(args):
    return subprocess.run([sys.executable] + [str(a) for a in args], cwd=REPO,
                          capture_output=True, text=True)


def metrics(work_dir) -> dict:
    with open(sorted(glob.glob(osp.join(work_dir, '*', '*.json')))[-1]) as f:
        return json.loads(f.readlines()[-1])


def predictions(out_dir) -> dict:
    files = sorted(glob.glob(osp.join(out_dir, '*.png')))
    assert files, out_dir
    return {osp.basename(f): cv2.imread(f, cv2.IMREAD_UNCHANGED) for f in files}


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Synthetic data, two trunk files of the same architecture (A, B), the example config
    trained 2 iterations on A with tools/train.py, that checkpoint without its provenance
    record (the format before it), its full export, and a VPT-Deep config of the same shapes."""
    from mmengine.config import Config

    from mmseg_prompt.testing import make_synthetic_ade20k, save_random_trunk
    root = tmp_path_factory.mktemp('provenance')
    data_root = make_synthetic_ade20k(root / 'ade', num_train=4, num_val=2, seed=1)
    bb = Config.fromfile(CONFIG).model.backbone.to_dict()
    # Not seed 0: the config's randomness.seed=0 makes a model built without a trunk file get
    # seed 0's random trunk, which would hide a full checkpoint whose trunk did not load.
    for name, seed in (('trunk_a.pth', 7), ('trunk_b.pth', 8)):
        save_random_trunk(bb, root / name, seed=seed)
    data = [f'{k}_dataloader.dataset.data_root={data_root}' for k in ('train', 'val', 'test')]
    train_opts = data + ['train_dataloader.batch_size=2', 'train_cfg.val_interval=100',
                         'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1']
    work = root / 'train'
    res = run([f'{REPO}/tools/train.py', CONFIG, '--work-dir', work, '--cfg-options',
               f'model.backbone.pretrained={root / "trunk_a.pth"}', 'train_cfg.max_iters=2']
              + train_opts)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    tuned = work / 'iter_2.pth'
    ckpt = torch.load(tuned, map_location='cpu', weights_only=True)
    assert 'backbone.provenance' in ckpt['state_dict']
    del ckpt['state_dict']['backbone.provenance']
    torch.save(ckpt, root / 'old_format.pth')
    res = run([f'{REPO}/tools/export_full_checkpoint.py', CONFIG, tuned, root / 'full.pth',
               '--cfg-options', f'model.backbone.pretrained={root / "trunk_a.pth"}'])
    assert res.returncode == 0, res.stderr[-3000:]
    vpt = {k: v for k, v in bb.items() if k not in ('cross_proj_drop', 'cross_attn_fold')}
    vpt.update(type='VPTDeepViT', _delete_=True)  # CVPT's tensors under the same names
    vpt_config = root / 'vpt_tiny.py'
    vpt_config.write_text(f'_base_ = [{CONFIG!r}]\nmodel = dict(backbone={vpt!r})\n')
    return dict(root=root, data=data, train_opts=train_opts, tuned=tuned, a=root / 'trunk_a.pth',
                b=root / 'trunk_b.pth', old=root / 'old_format.pth', full=root / 'full.pth',
                vpt_config=vpt_config)


def run_test_tool(setup, tool, work, ckpt=None, config=CONFIG, trunk='a', opts=(), out=None):
    """tools/test.py (ours or mmseg's stock one) with the trunk file ``trunk`` ('a', 'b' or
    None: no file)."""
    pretrained = setup[trunk] if trunk else None
    args = [f'{TOOLS[tool]}/test.py', config, ckpt or setup['tuned'], '--work-dir', work]
    if out is not None:
        args += ['--out', out]
    return run(args + ['--cfg-options', f'model.backbone.pretrained={pretrained}']
               + setup['data'] + list(opts))


@pytest.fixture(scope='module')
def baseline(setup, tmp_path_factory):
    """The right config and trunk, through both test tools: what every refusal is compared to."""
    out = {}
    for tool in TOOLS:
        work = tmp_path_factory.mktemp(f'baseline_{tool}')
        res = run_test_tool(setup, tool, work, out=work / 'preds' if tool == 'ours' else None)
        assert res.returncode == 0, res.stderr[-3000:]
        out[tool] = dict(res=res, miou=metrics(work)['mIoU'],
                         preds=predictions(work / 'preds') if tool == 'ours' else None)
    assert out['ours']['miou'] == out['stock']['miou']
    return out


def assert_passes(baseline, tool):
    """The right input still loads (so a blanket refusal cannot pass a refusal test)."""
    res = baseline[tool]['res']
    assert res.returncode == 0 and REFUSED not in res.stderr
    assert 'the frozen trunk stays as loaded from' in res.stdout
    assert 'do not match exactly' not in res.stdout + res.stderr


# ----------------------------------------------------------------------------- test tools
@pytest.mark.slow  # trains, exports and tests through the tools in subprocesses
@pytest.mark.parametrize('tool', TOOLS)
def test_other_trunk_is_refused_and_the_same_trunk_passes(setup, baseline, tool, tmp_path):
    res = run_test_tool(setup, tool, tmp_path, trunk='b')
    assert res.returncode != 0
    err = res.stderr
    assert REFUSED in err and str(setup['a']) in err and str(setup['b']) in err, err[-3000:]
    assert 'model.backbone.pretrained' in err and 'allow_other_trunk=True' in err
    assert not glob.glob(osp.join(tmp_path, '*', '*.json'))  # no metrics were computed
    assert_passes(baseline, tool)


@pytest.mark.slow  # trains, exports and tests through the tools in subprocesses
def test_allow_other_trunk_loads_with_a_warning(setup, baseline, tmp_path):
    res = run_test_tool(setup, 'ours', tmp_path, trunk='b',
                    opts=['model.backbone.allow_other_trunk=True'])
    assert res.returncode == 0, res.stderr[-3000:]
    warned = [line for line in res.stdout.splitlines() if 'WARNING' in line
              and 'allow_other_trunk=True' in line]  # (the logged config has the option too)
    assert len(warned) == 1
    assert str(setup['a']) in warned[0] and str(setup['b']) in warned[0]
    assert 0 <= metrics(tmp_path)['mIoU'] <= 100
    assert_passes(baseline, 'ours')


@pytest.mark.slow  # trains, exports and tests through the tools in subprocesses
@pytest.mark.parametrize('tool', TOOLS)
def test_other_method_is_refused_and_the_right_config_passes(setup, baseline, tool, tmp_path):
    """A CVPT checkpoint fits a VPT-Deep model key for key and shape for shape."""
    res = run_test_tool(setup, tool, tmp_path, config=setup['vpt_config'])
    assert res.returncode != 0
    err = res.stderr
    assert REFUSED in err and 'CVPTViT' in err and 'VPTDeepViT' in err, err[-3000:]
    assert 'a CrossAttentionPrompts part in the checkpoint, a SequencePrompts part in this' in err
    assert 'model.backbone.type' in err
    assert_passes(baseline, tool)


@pytest.mark.slow  # trains, exports and tests through the tools in subprocesses
def test_other_num_classes_is_refused_by_the_stock_test_tool(setup, baseline, tmp_path):
    res = run_test_tool(setup, 'stock', tmp_path, opts=['model.decode_head.num_classes=151',
                                                    'model.auxiliary_head.num_classes=151'])
    assert res.returncode != 0
    err = res.stderr
    assert REFUSED in err and '`decode_head.conv_seg.weight`' in err, err[-3000:]
    assert '(150, 64, 1, 1)' in err and '(151, 64, 1, 1)' in err
    assert 'model.decode_head.num_classes=150' in err
    assert_passes(baseline, 'stock')


@pytest.mark.slow  # trains, exports and tests through the tools in subprocesses
def test_other_head_width_is_refused(setup, baseline, tmp_path):
    res = run_test_tool(setup, 'ours', tmp_path, opts=['model.decode_head.channels=32'])
    assert res.returncode != 0
    err = res.stderr
    assert REFUSED in err and '`decode_head.conv_seg.weight`' in err, err[-3000:]
    assert '(150, 64, 1, 1)' in err and '(150, 32, 1, 1)' in err
    assert 'model.decode_head.channels' in err
    assert_passes(baseline, 'ours')


@pytest.mark.slow  # trains, exports and tests through the tools in subprocesses
def test_old_format_checkpoint_loads_with_one_warning(setup, baseline, tmp_path):
    res = run_test_tool(setup, 'ours', tmp_path, ckpt=setup['old'], out=tmp_path / 'preds')
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    warned = [line for line in log.splitlines() if 'backbone.provenance' in line]
    assert len(warned) == 1 and 'WARNING' in warned[0], warned
    assert 'do not match exactly' not in log
    preds = predictions(tmp_path / 'preds')
    ref = baseline['ours']['preds']
    assert preds.keys() == ref.keys() and all(np.array_equal(preds[k], ref[k]) for k in ref)


@pytest.mark.slow  # trains, exports and tests through the tools in subprocesses
@pytest.mark.parametrize('tool', TOOLS)
def test_full_checkpoint_loads_without_the_trunk_file(setup, baseline, tool, tmp_path):
    out = tmp_path / 'preds' if tool == 'ours' else None
    res = run_test_tool(setup, tool, tmp_path, ckpt=setup['full'], trunk=None, out=out)
    assert res.returncode == 0, res.stderr[-3000:]
    log = res.stdout + res.stderr
    assert 'tuned weights only' not in log and 'WARNING - CVPTViT' not in log
    assert 'do not match exactly' not in log
    assert metrics(tmp_path)['mIoU'] == baseline[tool]['miou']
    if tool == 'ours':
        ref = baseline['ours']['preds']
        assert all(np.array_equal(predictions(out)[k], ref[k]) for k in ref)


# ----------------------------------------------------------------------------- train tools
@pytest.mark.slow  # trains, exports and tests through the tools in subprocesses
def test_resume_and_load_from_on_another_trunk_are_refused(setup, tmp_path):
    def train(tool, work, trunk, *extra):
        return run([f'{TOOLS[tool]}/train.py', CONFIG, '--work-dir', work] + list(extra)
                   + ['--cfg-options', f'model.backbone.pretrained={setup[trunk]}',
                      'train_cfg.max_iters=3'] + setup['train_opts'])

    tuned = setup['tuned']
    refused = {
        'ours --resume': train('ours', tmp_path / 'r1', 'b', '--resume', tuned),
        'ours load_from': train('ours', tmp_path / 'r2', 'b', '--cfg-options',
                                f'load_from={tuned}'),
        'stock --resume': train('stock', tmp_path / 'r3', 'b', '--resume', '--cfg-options',
                                f'load_from={tuned}'),
    }
    for name, res in refused.items():
        assert res.returncode != 0, name
        assert REFUSED in res.stderr and str(setup['a']) in res.stderr, (name, res.stderr[-3000:])
        assert 'Iter(train)' not in res.stdout, name
    res = train('ours', tmp_path / 'ok', 'a', '--resume', tuned)  # the same trunk resumes
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'resumed epoch: 0, iter: 2' in res.stdout and 'Iter(train) [3/3]' in res.stdout
    ckpt = torch.load(tmp_path / 'ok' / 'iter_3.pth', map_location='cpu', weights_only=True)
    saved = bytes(ckpt['state_dict']['backbone.provenance'].tolist()).decode()
    assert json.loads(saved)['trunk']['source'] == str(setup['a'])


# ----------------------------------------------------------------------------- mmseg's APIs
API_SCRIPT = r'''
import json, logging, sys
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmseg.apis import MMSegInferencer, init_model

config, cases = sys.argv[1], json.loads(sys.argv[2])
records = []
handler = logging.Handler()
handler.emit = lambda r: records.append((r.levelname, r.getMessage()))
results = {}
for name, case in cases.items():
    for api in ('init_model', 'inferencer'):
        cfg = Config.fromfile(case.get('config', config))
        cfg.merge_from_dict(case['options'])
        del records[:]
        MMLogger.get_current_instance().addHandler(handler)  # print_log's 'current' logger
        try:
            if api == 'init_model':
                model = init_model(cfg, case['checkpoint'], device='cpu')
            else:
                MMSegInferencer(model=cfg, weights=case['checkpoint'], device='cpu')
            out = dict(ok=True)
        except Exception as e:
            out = dict(ok=False, type=type(e).__name__, error=str(e))
        out['warnings'] = [m for level, m in records if level == 'WARNING']
        results[f'{name}/{api}'] = out
print('RESULTS ' + json.dumps(results))
'''


@pytest.fixture(scope='module')
def api(setup):
    """init_model and MMSegInferencer on each case, in one fresh interpreter."""
    a, b = str(setup['a']), str(setup['b'])
    tuned = str(setup['tuned'])
    cases = {
        'right': dict(checkpoint=tuned, options={'model.backbone.pretrained': a}),
        'other_trunk': dict(checkpoint=tuned, options={'model.backbone.pretrained': b}),
        'allowed': dict(checkpoint=tuned, options={'model.backbone.pretrained': b,
                                                   'model.backbone.allow_other_trunk': True}),
        'other_method': dict(checkpoint=tuned, config=str(setup['vpt_config']),
                             options={'model.backbone.pretrained': a}),
        'other_classes': dict(checkpoint=tuned, options={
            'model.backbone.pretrained': a, 'model.decode_head.num_classes': 151,
            'model.auxiliary_head.num_classes': 151}),
        'old_format': dict(checkpoint=str(setup['old']),
                           options={'model.backbone.pretrained': a}),
        'full': dict(checkpoint=str(setup['full']), options={'model.backbone.pretrained': None}),
    }
    res = run(['-c', API_SCRIPT, CONFIG, json.dumps(cases)])
    assert res.returncode == 0, res.stderr[-3000:]
    line = [x for x in res.stdout.splitlines() if x.startswith('RESULTS ')][-1]
    return json.loads(line[len('RESULTS '):])


@pytest.mark.slow  # trains, exports and tests through the tools in subprocesses
@pytest.mark.parametrize('fn', ['init_model', 'inferencer'])
def test_mmseg_apis_check_what_they_load(setup, api, fn):
    def case(name):
        """The result, with the warnings about loading only (mmseg's registry warns too)."""
        r = dict(api[f'{name}/{fn}'])
        r['warnings'] = [w for w in r['warnings'] if 'CVPTViT' in w or 'do not match' in w]
        return r

    assert case('right') == dict(ok=True, warnings=[])  # the right input loads, silently
    refused = {name: case(name) for name in ('other_trunk', 'other_method', 'other_classes')}
    for name, r in refused.items():
        assert not r['ok'] and r['type'] == REFUSED, (name, r)
    assert str(setup['a']) in refused['other_trunk']['error']
    assert str(setup['b']) in refused['other_trunk']['error']
    assert 'CVPTViT' in refused['other_method']['error']
    assert 'model.decode_head.num_classes=150' in refused['other_classes']['error']
    allowed = case('allowed')
    assert allowed['ok'] and len(allowed['warnings']) == 1
    assert 'allow_other_trunk=True' in allowed['warnings'][0]
    old = case('old_format')
    assert old['ok'] and len(old['warnings']) == 1 and 'backbone.provenance' in old['warnings'][0]
    assert case('full') == dict(ok=True, warnings=[])


# ----------------------------------------------------------------------------- in process
def tiny_segmentor(pretrained=None, **backbone):
    """A tiny CVPT StrictEncoderDecoder on the tiny test trunk (width 64, 3 blocks)."""
    from mmseg.registry import MODELS

    from mmseg_prompt.testing import TINY_KWARGS, TINY_NAME
    bb = dict(type='CVPTViT', model_name=TINY_NAME, img_size=64, model_kwargs=TINY_KWARGS,
              out_indices=(2,), num_prompts=2,
              pretrained=None if pretrained is None else str(pretrained))
    return MODELS.build(dict(
        type='StrictEncoderDecoder', backbone=dict(bb, **backbone),
        decode_head=dict(type='FCNHead', in_channels=64, channels=8, num_convs=1,
                         num_classes=3)))


def record(state_dict) -> dict:
    return json.loads(bytes(state_dict['backbone.provenance'].tolist()).decode())


def test_trunk_is_hashed_once_per_trunk_load(tiny_trunk_file, monkeypatch):
    from mmseg_prompt.models.backbones import frozen_vit
    from mmseg_prompt.models.backbones.provenance import tensors_sha256
    calls = []
    monkeypatch.setattr(frozen_vit, 'tensors_sha256',
                        lambda tensors: calls.append(1) or tensors_sha256(tensors))
    path, _ = tiny_trunk_file
    model = tiny_segmentor(path)
    assert not calls  # not at build time: only when first needed
    states = [model.state_dict() for _ in range(3)]  # three saves
    assert len(calls) == 1
    assert record(states[0])['trunk']['sha256'] == tensors_sha256(
        model.backbone.frozen_trunk_tensors())  # the digest FrozenTrunkCheckHook logs
    model.load_state_dict(states[0])  # checking a tuned-only checkpoint uses the cached one
    assert len(calls) == 1
    model.backbone.save_frozen_trunk = True
    full = model.state_dict()
    fresh = tiny_segmentor(None)  # a random trunk: the full checkpoint brings the trunk
    fresh.load_state_dict(full)
    assert len(calls) == 1  # a full checkpoint's trunk is not checked, so not hashed
    assert record(fresh.state_dict())['trunk']['sha256'] == record(states[0])['trunk']['sha256']
    assert len(calls) == 2  # the new trunk, hashed once when needed


def test_lazily_loaded_trunk_is_the_one_fingerprinted(tiny_trunk_file):
    """A trunk from init_cfg is loaded by init_weights, or when a tuned-only checkpoint arrives:
    the check must compare the loaded trunk, not the random one the model was built with."""
    path, _ = tiny_trunk_file
    tuned = tiny_segmentor(path).state_dict()
    lazy = tiny_segmentor(None, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    before = record(lazy.state_dict())['trunk']  # not loaded yet: the random trunk's
    assert before['source'] is None and before['sha256'] != record(tuned)['trunk']['sha256']
    lazy.load_state_dict(tuned)  # loads the trunk, then checks it (not the cached digest)
    assert record(lazy.state_dict())['trunk'] == record(tuned)['trunk']


def test_other_prompt_layout_with_the_same_shapes_is_refused(tiny_trunk_file):
    from mmseg_prompt.models.backbones import CheckpointMismatchError
    path, _ = tiny_trunk_file
    tuned = tiny_segmentor(path, guided_blocks=(2,)).state_dict()
    with pytest.raises(CheckpointMismatchError,
                       match=r'CrossAttentionPrompts `prompts` guided_blocks: \[2\] in the '
                             r'checkpoint, \[\] in this config'):
        tiny_segmentor(path).load_state_dict(tuned)
    tiny_segmentor(path, guided_blocks=(2,)).load_state_dict(tuned)  # the right layout loads
