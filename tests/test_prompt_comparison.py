"""The prompt comparison (docs/comparison.md): its synthetic tasks, the cached pretrained trunk, the
arm configs, and the harness end to end through the user's tools on a tiny setting."""
import ast
import colorsys
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.runner import set_random_seed
from mmengine.structures import PixelData
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample

from mmseg_prompt.testing import save_random_trunk
from mmseg_prompt.testing.shape_tasks import (HUE_PAIR_CLASS_IDS, HUE_PAIR_CLASSES, SOURCE_SHAPES,
                                              hue_pair_colour, hue_pair_sample,
                                              make_hue_pairs_ade20k, source_samples)
from mmseg_prompt.testing.tiny_trunk import (TINY_TRUNK, cached_tiny_trunk, cpu_capability,
                                             file_sha256, patch_labels, rotate_hue)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
COMPARISON = osp.join(REPO, 'configs', 'example', 'comparison')
# arm -> (backbone type, prompts per block, bias tuning, the ViT-L config it inherits)
ARMS = {
    'head_only': ('VPTDeepViT', 0, False, 'vpt_vitl_ade20k.py'),
    'vpt': ('VPTDeepViT', 10, False, 'vpt_vitl_ade20k.py'),
    'cvpt10': ('CVPTViT', 10, False, 'cvpt_vitl_ade20k.py'),
    'cvpt50': ('CVPTViT', 50, False, 'cvpt_vitl_ade20k.py'),
    'davpt': ('DAVPTViT', 10, False, 'davpt_vitl_ade20k.py'),
    'davpt_noloss': ('DAVPTViT', 10, False, 'davpt_vitl_ade20k.py'),
    'davpt_plus': ('DAVPTViT', 10, True, 'davpt_plus_vitl_ade20k.py'),
    'lora': ('FrozenViT', None, False, 'lora_vitl_ade20k.py'),
    'adaptformer': ('FrozenViT', None, False, 'adaptformer_vitl_ade20k.py'),
}
# the adapter arms' trunk parameters, by hand: LoRA r=2 on q and v of 4 blocks of width 96;
# AdaptFormer's bottleneck of 4 beside each of the 4 MLPs
ADAPTER_PARAMS = dict(lora=4 * 2 * 2 * (96 + 96), adaptformer=4 * (2 * 4 * 96 + 4 + 96))
# the linear head on width 96: a 1x1 conv (no bias: BatchNorm follows), BatchNorm without
# affine, the 1x1 classifier of 150 ADE20K classes; and 10 prompts of width 96 in each of 4 blocks
HEAD_PARAMS = 96 * 96 + 96 * 150 + 150
PROMPTS_10 = 4 * 10 * 96


def arm_config(arm):
    return osp.join(COMPARISON, f'{arm}_tiny_hue_pairs.py')


def base_files(path):
    """The ``_base_`` list a config file assigns (read from its source)."""
    for node in ast.parse(open(path).read()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == '_base_':
            value = ast.literal_eval(node.value)
            return [value] if isinstance(value, str) else list(value)
    return []


def fit_accuracy(model, x, y, steps=600):
    """Train ``model`` on (x, y) with Adam to convergence; return its training accuracy."""
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (model(x).argmax(1) == y).float().mean().item()


def test_hue_pair_classes_are_separable_but_not_linearly_in_rgb():
    """The task's premise: the class of a colour is its hue sector mod 4 (a rule that is exact),
    which a small MLP on RGB learns but a linear classifier on RGB cannot."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(len(HUE_PAIR_CLASSES)), 400)
    rgb = np.stack([hue_pair_colour(rng, int(c)) for c in y]) / 255
    hues = np.array([colorsys.rgb_to_hsv(*c)[0] for c in rgb])
    assert (np.floor(hues * 8).astype(int) % 4 == y).all()
    x, t = torch.tensor(rgb, dtype=torch.float32), torch.tensor(y)
    torch.manual_seed(0)
    linear = fit_accuracy(torch.nn.Linear(3, 4), x, t)
    mlp = fit_accuracy(torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.ReLU(),
                                           torch.nn.Linear(64, 4)), x, t)
    assert linear < 0.6 and mlp > 0.9, (linear, mlp)


def test_hue_pairs_dataset_is_read_by_mmseg_ade20k(tmp_path):
    root = make_hue_pairs_ade20k(tmp_path / 'a', num_train=6, num_val=3, seed=1)
    dataset = DATASETS.build(dict(
        type='ADE20KDataset', data_root=root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', reduce_zero_label=True)]))
    assert len(dataset) == 6
    seen = set()
    for i in range(len(dataset)):
        item = dataset[i]
        img, seg = item['img'], item['gt_seg_map']  # BGR, classes after reduce_zero_label
        assert img.shape == (64, 64, 3) and seg.shape == (64, 64)
        assert set(np.unique(seg)) <= set(range(len(HUE_PAIR_CLASS_IDS)))
        seen |= set(np.unique(seg).tolist())
        # the pixels of each class show one of its two hue sectors (JPEG and noise aside)
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in img[..., ::-1].reshape(-1, 3) / 255])
        sector = np.floor(hsv[:, 0] * 8).astype(int) % 4
        assert (sector == seg.reshape(-1)).mean() > 0.9
    assert len(seen) >= 3
    again = make_hue_pairs_ade20k(tmp_path / 'b', num_train=6, num_val=3, seed=1)
    for a in sorted(glob.glob(osp.join(root, 'annotations', '*', '*.png'))):
        b = a.replace(root, again)
        assert open(a, 'rb').read() == open(b, 'rb').read()


def test_source_samples_and_patch_labels():
    images, labels = source_samples(np.random.default_rng(0), 8)
    assert images.shape == (8, 64, 64, 3) and images.dtype == np.uint8
    assert set(np.unique(labels)) <= set(range(len(SOURCE_SHAPES) + 1))
    assert all((lab > 0).any() for lab in labels)  # every image has a shape
    # majority label per 8 x 8 patch, by hand: a 16 x 16 map, four patches
    lab = np.zeros((1, 16, 16), np.int64)
    lab[0, :8, :8] = 2                  # patch 0: all 2
    lab[0, :5, 8:] = 3                  # patch 1: 40 pixels of 3, 24 of 0
    lab[0, 8:, :3] = 1                  # patch 2: 24 pixels of 1, 40 of 0
    lab[0, 8:, 8:] = 4                  # patch 3: all 4
    assert patch_labels(lab, 8).tolist() == [[2, 3, 0, 4]]


def test_rotate_hue_against_colorsys():
    """A rotation about the grey axis shifts the HSV hue by theta and keeps the value (max
    channel) of a colour that stays inside the RGB cube; theta = 2 pi is the identity."""
    rgb = np.array([[200, 90, 120], [120, 150, 100], [110, 120, 180]], np.float32)
    x = torch.from_numpy((rgb - 127.5) / 127.5).T.reshape(1, 3, 3, 1)
    for theta in (0.3, 1.2):
        y = rotate_hue(x, torch.tensor([theta]))[0, :, :, 0].T.numpy() * 127.5 + 127.5
        for before, after in zip(rgb / 255, y / 255):
            h0, s0, v0 = colorsys.rgb_to_hsv(*before)
            h1, _, _ = colorsys.rgb_to_hsv(*after)
            shift = (h1 - h0) % 1.0
            # HSV's hue is hexagonal, the rotation circular: they agree to a few degrees
            assert abs(shift - theta / (2 * np.pi)) < 0.03, (before, after, shift)
            assert abs(after.mean() - before.mean()) < 1e-5  # the grey component is kept
    full = rotate_hue(x, torch.tensor([2 * np.pi]))
    torch.testing.assert_close(full, x, atol=1e-5, rtol=0)


def test_trunk_is_pretrained_once_then_reused_and_loads_into_the_arms(tmp_path):
    logs = []
    recipe = dict(steps=2, batch_size=4)
    path, info = cached_tiny_trunk(tmp_path, recipe, log=logs.append)
    assert any(m.startswith('pretraining the tiny trunk') for m in logs)
    assert 0.0 <= info['accuracy']['all'] <= 1.0 and info['recipe']['steps'] == 2
    assert info['sha256'] == file_sha256(path) and info['cpu_capability'] == cpu_capability()
    saved = torch.load(path, weights_only=True)
    assert not any(k.startswith('head.') for k in saved)
    logs.clear()
    again, _ = cached_tiny_trunk(tmp_path, recipe, log=logs.append)
    assert again == path and len(logs) == 1 and logs[0].startswith('reusing')
    other, _ = cached_tiny_trunk(tmp_path, dict(recipe, seed=1), log=logs.append)
    assert other != path and logs[-1].startswith('pretrained in')  # another recipe, another file
    # the file is what the comparison configs' backbone loads, strictly
    cfg = Config.fromfile(arm_config('cvpt10'))
    cfg.model.backbone.pretrained = str(path)
    model = MODELS.build(cfg.model)
    model.init_weights()
    trunk = model.backbone.trunk.state_dict()
    assert set(trunk) == set(saved)
    for k, v in saved.items():
        torch.testing.assert_close(trunk[k], v, rtol=0, atol=0)


@pytest.mark.slow  # two pretraining tools in fresh interpreters
def test_each_cpu_kernel_set_makes_and_caches_its_own_trunk(tmp_path):
    """The tool as a user runs it: under ATEN_CPU_CAPABILITY=avx2 the same recipe gives another
    cached file than under the machine's own kernels, and the provenance beside each file names
    the kernel set and the file's sha256."""
    cmd = [sys.executable, osp.join(REPO, 'tools', 'pretrain_tiny_trunk.py'), '--steps', '2',
           '--batch-size', '4', '--cache-dir', str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != 'ATEN_CPU_CAPABILITY'}
    files = {}
    for name, extra in (('native', {}), ('avx2', {'ATEN_CPU_CAPABILITY': 'avx2'})):
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**env, **extra})
        assert res.returncode == 0, res.stderr[-2000:]
        files[name] = res.stdout.strip().splitlines()[-1]
        info = json.loads(open(osp.splitext(files[name])[0] + '.json').read())
        assert info['sha256'] == file_sha256(files[name])
        if name == 'avx2':
            assert info['cpu_capability'] == 'AVX2'
    if cpu_capability() != 'AVX2':
        assert files['native'] != files['avx2']
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    assert res.returncode == 0 and 'reusing' in res.stdout
    assert res.stdout.strip().splitlines()[-1] == files['native']


def test_arms_differ_only_in_the_method_and_inherit_their_vitl_config():
    cfgs = {arm: Config.fromfile(arm_config(arm)) for arm in ARMS}
    assert sorted(osp.basename(p) for p in glob.glob(osp.join(COMPARISON, '[!_]*.py'))) == \
        sorted(osp.basename(arm_config(a)) for a in ARMS)
    shared = ('optim_wrapper', 'param_scheduler', 'train_cfg', 'train_dataloader',
              'val_dataloader', 'test_dataloader', 'randomness', 'tta_pipeline', 'tta_model')
    model_shared = ('data_preprocessor', 'decode_head', 'neck', 'auxiliary_head', 'test_cfg')
    trunk_keys = ('model_name', 'model_kwargs', 'img_size', 'out_indices', 'final_norm',
                  'pretrained')
    ref = cfgs['head_only']
    for arm, cfg in cfgs.items():
        for key in shared:
            assert cfg[key] == ref[key], (arm, key)
        for key in model_shared:
            assert cfg.model.get(key) == ref.model.get(key), (arm, key)
        for key in trunk_keys:
            assert cfg.model.backbone[key] == ref.model.backbone[key], (arm, key)
        bb_type, prompts, bias, vitl = ARMS[arm]
        assert cfg.model.backbone.type == bb_type
        assert cfg.model.backbone.get('num_prompts') == prompts
        assert bool(cfg.model.backbone.get('bias_tuning', False)) == bias
        # the arm's chain of _base_ files reaches the real ViT-L config
        chain, files = [], [arm_config(arm)]
        while files:
            f = files.pop()
            chain.append(osp.basename(f))
            files += [osp.normpath(osp.join(osp.dirname(f), b)) for b in base_files(f)]
        assert vitl in chain, (arm, chain)
    assert cfgs['davpt'].model.type == 'MetricGuidedEncoderDecoder'
    assert cfgs['davpt'].custom_hooks == cfgs['davpt_plus'].custom_hooks == \
        cfgs['davpt_noloss'].custom_hooks
    assert cfgs['davpt_noloss'].model.metric_cfg == dict(cfgs['davpt'].model.metric_cfg,
                                                         beta=0.0, lambda_cls=0.0)
    # no photometric augmentation: the labels are hues
    assert [t.type for t in ref.train_dataloader.dataset.pipeline] == [
        'LoadImageFromFile', 'LoadAnnotations', 'CheckSegLabels', 'RandomFlip', 'PackSegInputs']


def test_comparison_head_standardises_its_features_and_is_linear_at_test_time():
    """The shared head (_hue_pairs.py): in training its logits do not change when the trunk's
    features are scaled (BatchNorm standardises them, so every trunk's feature scale trains the
    head alike); at test time it is an affine map of the features (a linear probe)."""
    cfg = Config.fromfile(arm_config('head_only'))
    head = MODELS.build(cfg.model.decode_head)
    assert sum(p.numel() for p in head.parameters()) == HEAD_PARAMS
    torch.manual_seed(0)
    f1, f2 = torch.randn(4, 96, 8, 8) * 3 + 1, torch.randn(4, 96, 8, 8)
    head.train()
    assert torch.allclose(head([10 * f1]), head([f1]), atol=1e-4)
    for _ in range(20):  # running statistics of the training features
        head([f1])
    head.eval()
    mix = head([0.3 * f1 + 0.7 * f2])
    assert torch.allclose(mix, 0.3 * head([f1]) + 0.7 * head([f2]), atol=1e-4)
    assert not torch.allclose(head([10 * f1]), head([f1]), atol=1e-2)  # fixed statistics now


def _batch(num=4, seed=0):
    rng = np.random.default_rng(seed)
    inputs, samples = [], []
    for _ in range(num):
        image, label = hue_pair_sample(rng)
        inputs.append(torch.from_numpy(image[..., ::-1].copy()).permute(2, 0, 1))  # BGR as read
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(label.astype(np.int64) - 1)[None])
        sample.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def arm_model(arm, tmp_path):
    """The arm's config and its segmentor, built in train mode on a seeded random tiny trunk."""
    cfg = Config.fromfile(arm_config(arm))
    trunk_file = tmp_path / 'trunk.pth'
    save_random_trunk(TINY_TRUNK, trunk_file, seed=0)
    cfg.model.backbone.pretrained = str(trunk_file)
    set_random_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    return cfg, model


@pytest.mark.parametrize('arm', ['vpt', 'cvpt10', 'head_only'])
def test_prompts_receive_gradients_and_move(arm, tmp_path):
    """One training step of the arm's model and optimizer, as its config builds them: every
    prompt gets a non-zero gradient and moves; the trunk gets none and stays."""
    cfg, model = arm_model(arm, tmp_path)
    prompts = {n: p for n, p in model.named_parameters() if n.startswith('backbone.prompts.')}
    trunk = {n: p for n, p in model.named_parameters() if n.startswith('backbone.trunk.')}
    assert len(prompts) == (0 if arm == 'head_only' else 4)
    before = {n: p.detach().clone() for n, p in list(prompts.items()) + list(trunk.items())}
    head_before = model.decode_head.conv_seg.weight.detach().clone()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    data = model.data_preprocessor(_batch(), True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    optim.backward(loss)
    for n, p in prompts.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert all(p.grad is None for p in trunk.values())
    optim.step()
    for n in prompts:
        assert not torch.equal(prompts[n], before[n]), f'{n} did not move'
    for n in trunk:
        assert torch.equal(trunk[n], before[n]), n
    assert not torch.equal(model.decode_head.conv_seg.weight, head_before)


@pytest.mark.parametrize('arm', ['lora', 'adaptformer'])
def test_adapter_arms_train_only_their_part_sized_as_the_prompt_arms(arm, tmp_path):
    """The adapter arms train their part (as many values as said, about the prompt arms' 3,840)
    and the head, nothing of the trunk: after two steps of the arm's optimizer every part
    tensor has moved (one step moves only the zero-initialised B / up-projection, whose zero
    keeps the other's gradient at zero)."""
    cfg, model = arm_model(arm, tmp_path)
    part = {n: p for n, p in model.named_parameters() if n.startswith(f'backbone.{arm}.')}
    tuned = {n for n, p in model.named_parameters() if p.requires_grad}
    assert tuned == set(part) | {n for n in tuned if n.startswith('decode_head.')}
    assert sum(p.numel() for p in part.values()) == ADAPTER_PARAMS[arm]
    before = {n: p.detach().clone() for n, p in part.items()}
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    for _ in range(2):
        data = model.data_preprocessor(_batch(), True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        optim.update_params(loss)
    for n, p in part.items():
        assert not torch.equal(p, before[n]), f'{n} did not move'


def run_script(tmp_path, source, job):
    """Run ``source`` in a fresh interpreter in ``tmp_path`` with ``job`` as its json argument
    (as a user runs mmseg's APIs); return the json of its last output line."""
    (tmp_path / 'job.json').write_text(json.dumps(job))
    (tmp_path / 'script.py').write_text(source)
    res = subprocess.run([sys.executable, str(tmp_path / 'script.py'),
                          str(tmp_path / 'job.json')], cwd=tmp_path, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


PREDICT = """
import json, sys
import numpy as np
from mmseg.apis import inference_model, init_model
job = json.load(open(sys.argv[1]))
preds = {}
for arm, (config, ckpt) in job['arms'].items():
    model = init_model(config, ckpt, device='cpu',
                       cfg_options={'model.backbone.pretrained': job['trunk']})
    preds[arm] = np.stack([inference_model(model, img).pred_sem_seg.data[0].numpy()
                           for img in job['images']])
print(json.dumps(dict(changed=float((preds['head_only'] != preds['cvpt10']).mean()))))
"""


@pytest.mark.slow  # the harness runs tools/train.py and tools/test.py in subprocesses
def test_harness_end_to_end(tmp_path):
    """tools/prompt_comparison.py on a tiny setting with two trunks (the machine's kernels and
    avx2): each trunk's provenance, the tables (paired gains computed by hand), the plot, an
    overlay, trainable parameters by hand, CVPT's predictions differ from head-only's at the same
    seed, and --min-margin passes and fails as asked."""
    work = tmp_path / 'work'
    cmd = [sys.executable, osp.join(REPO, 'tools', 'prompt_comparison.py'),
           '--arms', 'head_only,cvpt10', '--seeds', '0', '--trunk-seeds', '0',
           '--cpu-capabilities', 'native,avx2', '--iters', '8', '--pretrain-steps', '3',
           '--num-train', '8', '--num-val', '3', '--overlays', '1', '--threads', '1',
           '--cache-dir', str(tmp_path / 'cache'), '--work-dir', str(work)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count('pretraining the tiny trunk (3 steps') == 2
    assert '| head-only (linear probe) | 23,766 |' in res.stdout
    assert '| CVPT, 10 prompts | 27,606 |' in res.stdout
    out = json.loads((work / 'results.json').read_text())
    assert list(out['trunks']) == ['native-s0', 'avx2-s0']
    for name, trunk in out['trunks'].items():
        assert trunk['sha256'] == file_sha256(trunk['path'])
        assert trunk['recipe']['steps'] == 3 and trunk['seed'] == 0
        assert 0 <= trunk['accuracy']['all'] <= 1
    assert out['trunks']['avx2-s0']['cpu_capability'] == 'AVX2'
    assert out['trunks']['native-s0']['cpu_capability'] == cpu_capability()
    assert out['arms']['head_only']['trainable_params'] == HEAD_PARAMS
    assert out['arms']['cvpt10']['trainable_params'] == HEAD_PARAMS + PROMPTS_10
    for arm in ('head_only', 'cvpt10'):
        runs = out['arms'][arm]['runs']
        assert [(r['trunk'], r['seed']) for r in runs] == [('native-s0', 0), ('avx2-s0', 0)]
        for run in runs:
            assert 0 <= run['miou_ss'] <= 100 and 0 <= run['miou_tta'] <= 100
            assert run['step_s'] > 0 and run['peak_rss_mib'] > 100
            assert 'decode.loss_ce' in run['losses']
        assert len(glob.glob(str(work / arm / 'native-s0' / 'seed0' / 'pred' / '*.png'))) == 3
    gains = [c['miou_ss'] - h['miou_ss'] for c, h in zip(out['arms']['cvpt10']['runs'],
                                                         out['arms']['head_only']['runs'])]
    mean = sum(gains) / 2
    sd = abs(gains[0] - gains[1]) / 2 ** 0.5
    assert f'{mean:.2f} ± {sd:.2f} ({min(gains):+.2f})' in res.stdout
    (overlay,) = glob.glob(str(work / 'overlays' / '*.png'))  # image, truth, 2 predictions
    assert cv2.imread(overlay).shape == (22 + 3 * 64, 4 * 3 * 64, 3)
    assert (work / 'miou_vs_params.png').stat().st_size > 1000
    # the table (header, rule, 2 arms) and the per-trunk one (header, rule, 2 trunk rows, 2 arms)
    assert (work / 'results.md').read_text().count('\n|') == 4 + 6

    images = sorted(glob.glob(str(work / 'data' / 'hue_pairs' / 'ADEChallengeData2016' /
                                  'images' / 'validation' / '*.jpg')))
    job = dict(trunk=out['trunks']['native-s0']['path'], images=images,
               arms={arm: (osp.join(COMPARISON, f'{arm}_tiny_hue_pairs.py'),
                           out['arms'][arm]['runs'][0]['checkpoint'])
                     for arm in ('head_only', 'cvpt10')})
    assert run_script(tmp_path, PREDICT, job)['changed'] > 0.01

    report = cmd[:2] + ['--report-only', '--work-dir', str(work), '--margin-arms', 'cvpt10',
                        '--no-plot']
    ok = subprocess.run(report + ['--min-margin', '-100'], cwd=REPO, capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert f'CVPT, 10 prompts - head-only: {mean:+.2f} mIoU' in ok.stdout
    fail = subprocess.run(report + ['--min-margin', '100'], cwd=REPO, capture_output=True,
                          text=True)
    assert fail.returncode == 1
    assert 'CVPT, 10 prompts did not beat head-only by 100.0 mIoU points' in fail.stderr


COMPARE_LOGITS = """
import json, sys
import torch
from mmseg.apis import inference_model, init_model
job = json.load(open(sys.argv[1]))
logits = {}
for name, (config, ckpt, options) in job['runs'].items():
    model = init_model(config, ckpt, device='cpu', cfg_options=options)
    logits[name] = torch.stack([inference_model(model, img).seg_logits.data
                                for img in job['images']])
a, b = logits.values()
print(json.dumps(dict(equal=bool(torch.equal(a, b)), max_diff=float((a - b).abs().max()))))
"""


@pytest.mark.slow  # two tools/train.py runs and mmseg's inference API in fresh interpreters
def test_davpt_without_its_metric_loss_trains_as_the_same_prompt_layout(tmp_path):
    """The DA-VPT arm with both loss weights 0 (davpt_noloss) trains exactly as VPT-Deep with the
    same prompt layout (10, 10, 10, 20) and no guidance: the same tuned weights and the same
    predictions at the same seed, although its mapping hook runs (and re-clusters) throughout."""
    root = make_hue_pairs_ade20k(tmp_path / 'data', num_train=8, num_val=3, seed=0)
    trunk = tmp_path / 'trunk.pth'
    save_random_trunk(TINY_TRUNK, trunk, seed=0)
    iters = 6
    common = {'model.backbone.pretrained': str(trunk), 'randomness.seed': 3,
              'train_dataloader.dataset.data_root': root,
              'val_dataloader.dataset.data_root': root,
              'test_dataloader.dataset.data_root': root,
              'train_cfg.max_iters': iters, 'train_cfg.val_interval': iters,
              'default_hooks.checkpoint.interval': iters,
              'param_scheduler.0.end': 1, 'param_scheduler.1.begin': 1,
              'param_scheduler.1.end': iters}
    runs = {'davpt_noloss': (arm_config('davpt_noloss'),
                             dict(common, **{'custom_hooks.0.interval': 2,
                                             'custom_hooks.0.init_max_iters': 2})),
            'vpt_layout': (arm_config('vpt'),
                           dict(common, **{'model.backbone.num_prompts': [10, 10, 10, 20]}))}
    checkpoints = {}
    for name, (config, options) in runs.items():
        work = tmp_path / name
        cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'), config, '--work-dir',
               str(work), '--cfg-options'] + [
                   f'{k}={json.dumps(v) if isinstance(v, list) else v}'
                   for k, v in options.items()]
        res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        if name == 'davpt_noloss':
            assert res.stdout.count('class-to-prompt mapping re-clustered') >= 2
        checkpoints[name] = (work / 'last_checkpoint').read_text().strip()
    tuned = {name: torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
             for name, ckpt in checkpoints.items()}
    a, b = tuned['davpt_noloss'], tuned['vpt_layout']
    prompts = sorted(k for k in b if k.startswith('backbone.prompts.'))
    assert prompts == [f'backbone.prompts.tokens.{i}' for i in range(4)]
    assert b['backbone.prompts.tokens.3'].shape == (20, 96)
    # the head's conv, BatchNorm statistics and classifier
    head = sorted(k for k in b if k.startswith('decode_head.'))
    assert 'decode_head.convs.0.bn.running_var' in head and 'decode_head.conv_seg.weight' in head
    for key in prompts + head:
        assert torch.equal(a[key], b[key]), key
    job = dict(images=sorted(glob.glob(osp.join(root, 'images', 'validation', '*.jpg'))),
               runs={name: (config, checkpoints[name],
                            {k: v for k, v in options.items()
                             if k.startswith('model.backbone.')})
                     for name, (config, options) in runs.items()})
    assert run_script(tmp_path, COMPARE_LOGITS, job) == dict(equal=True, max_diff=0.0)
