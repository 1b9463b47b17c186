"""The comparison of tuning methods (docs/comparison.md): its synthetic tasks, the cached
pretrained trunk, the arm configs and their discovery, the tables, the skipping of finished runs,
and the harness end to end through the user's tools on a tiny setting."""
import ast
import colorsys
import glob
import importlib.util
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
from mmseg_prompt.utils.pinned_numerics import pins_apply, pins_held

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
COMPARISON = osp.join(REPO, 'configs', 'example', 'comparison')
TOOL = osp.join(REPO, 'tools', 'compare_methods.py')
# arm -> (backbone type, prompts per block, bias tuning, the ViT-L config it inherits), in the
# tool's default order
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
    'bitfit': ('FrozenViT', None, False, 'bitfit_vitl_ade20k.py'),
}
LABELS = ['head-only (linear probe)', 'VPT-Deep, 10 prompts', 'CVPT, 10 prompts',
          'CVPT, 50 prompts', 'DA-VPT', 'DA-VPT, metric loss off', 'DA-VPT+',
          'LoRA, rank 2 on q and v', 'AdaptFormer, bottleneck 4', 'BitFit, every bias']
# the adapter arms' trunk parameters, by hand: LoRA r=2 on q and v of 4 blocks of width 96;
# AdaptFormer's bottleneck of 4 beside each of the 4 MLPs; BitFit's delta on every bias: per
# block norm1, q/k/v (3 x 96), proj, norm2, fc1 (4 x 96), fc2, then the patch embedding's and
# the final norm's (the arms run it)
ADAPTER_PARAMS = dict(lora=4 * 2 * 2 * (96 + 96), adaptformer=4 * (2 * 4 * 96 + 4 + 96),
                      bitfit=4 * (96 + 3 * 96 + 96 + 96 + 4 * 96 + 96) + 96 + 96)
# the linear head on width 96: a 1x1 conv (no bias: BatchNorm follows), BatchNorm without
# affine, the 1x1 classifier of 150 ADE20K classes; and 10 prompts of width 96 in each of 4 blocks
HEAD_PARAMS = 96 * 96 + 96 * 150 + 150
PROMPTS_10 = 4 * 10 * 96


def arm_config(arm):
    return osp.join(COMPARISON, f'{arm}_tiny_hue_pairs.py')


def load_tool():
    """tools/compare_methods.py as a module (tools/ is no package)."""
    spec = importlib.util.spec_from_file_location('compare_methods', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


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


def test_the_arms_are_the_folder_s_configs_with_their_own_labels_in_today_s_order():
    """Every config of configs/example/comparison/ is an arm, named by its stem, labelled and
    ordered by its own keys; the default --arms is every arm in that order; mmengine keeps the
    keys as plain config values."""
    args = load_tool().parse_args([])
    assert list(args.arms) == list(ARMS)
    assert [a.label for a in args.arms.values()] == LABELS
    assert [a.config for a in args.arms.values()] == [arm_config(a) for a in ARMS]
    cfg = Config.fromfile(arm_config('cvpt50'))  # inherits cvpt10's file and sets its own
    assert (cfg.comparison_label, cfg.comparison_order) == ('CVPT, 50 prompts', 40)


def test_a_new_arm_is_one_config_file_and_bad_arm_files_are_named(tmp_path, capsys):
    tool = load_tool()
    base = arm_config('head_only')
    (tmp_path / '_shared.py').write_text('x = 1\n')  # a base file: not an arm
    (tmp_path / 'wide_tiny_hue_pairs.py').write_text(
        f"_base_ = [{base!r}]\ncomparison_label = 'wide head'\n"
        "model = dict(decode_head=dict(channels=192))\n")
    (tmp_path / 'head_only_tiny_hue_pairs.py').write_text(
        f"_base_ = [{base!r}]\ncomparison_label = 'head-only'\ncomparison_order = 5\n")
    args = tool.parse_args(['--config-dir', str(tmp_path)])
    assert [(a.name, a.label, a.order) for a in args.arms.values()] == [
        ('head_only', 'head-only', 5), ('wide', 'wide head', None)]
    assert Config.fromfile(args.arms['wide'].config).model.decode_head.channels == 192
    with pytest.raises(SystemExit):
        tool.parse_args(['--config-dir', str(tmp_path), '--arms', 'head_only,vpt'])
    assert "unknown arm(s) ['vpt']" in capsys.readouterr().err
    (tmp_path / 'copy_tiny_hue_pairs.py').write_text(
        f"_base_ = [{base!r}]\ncomparison_label = 'wide head'\n")
    with pytest.raises(SystemExit):
        tool.parse_args(['--config-dir', str(tmp_path)])
    err = capsys.readouterr().err
    assert "share a comparison_label (['wide head']" in err and 'copy_tiny_hue_pairs.py' in err
    (tmp_path / 'copy_tiny_hue_pairs.py').write_text(f'_base_ = [{base!r}]\n')  # inherits one
    res = subprocess.run([sys.executable, TOOL, '--config-dir', str(tmp_path), '--report-only',
                          '--work-dir', str(tmp_path / 'w')], capture_output=True, text=True)
    assert res.returncode == 2
    assert f'{tmp_path / "copy_tiny_hue_pairs.py"} assigns no comparison_label' in res.stderr


def test_tables_against_hand_computed_means_stds_and_paired_gains():
    """Two arms on two trunks x two seeds: mean ± std over the runs, the std of the per-trunk
    means, the paired gains over head-only (mean ± std and smallest), step time and memory."""
    tool = load_tool()

    def runs(values, tta):
        keys = [('t1', 0), ('t1', 1), ('t2', 0), ('t2', 1)]
        return [dict(trunk=t, seed=s, miou_ss=v, miou_tta=w, step_s=0.01 * (i + 1),
                     peak_rss_mib=100 + i) for i, ((t, s), v, w) in
                enumerate(zip(keys, values, tta))]
    results = {'head_only': dict(label='head-only', trainable_params=1000,
                                 runs=runs([10, 12, 20, 22], [11, 11, 21, 21])),
               'x': dict(label='X', trainable_params=12345,
                         runs=runs([13, 14, 22, 27], [12, 12, 12, 12]))}
    # head-only: mean 16, std sqrt((36 + 16 + 16 + 36) / 3); per-trunk means 11 and 21, whose
    # std is 10 / sqrt(2); --tta: mean 16, std sqrt(4 * 25 / 3). X: mean 19, std
    # sqrt((36 + 25 + 9 + 64) / 3); per-trunk means 13.5 and 24.5; gains 3, 2, 2, 5: mean 3, std
    # sqrt((0 + 1 + 1 + 4) / 3), smallest 2. Step time 25 ms (mean of 10-40), peak 103 MiB.
    lines = tool.table(results, tta=True).splitlines()
    assert lines[2] == (f'| head-only | 1,000 | 16.00 ± {(104 / 3) ** 0.5:.2f} | '
                        f'{10 / 2 ** 0.5:.2f} | 16.00 ± {(100 / 3) ** 0.5:.2f} | - | 25 | 103 |')
    assert lines[3] == (f'| X | 12,345 | 19.00 ± {(134 / 3) ** 0.5:.2f} | {11 / 2 ** 0.5:.2f} | '
                        f'12.00 ± 0.00 | 3.00 ± {(6 / 3) ** 0.5:.2f} (+2.00) | 25 | 103 |')
    assert '| mIoU multi-scale + flip |' in lines[0]
    assert 'multi-scale' not in tool.table(results, tta=False)
    trunks = {t: dict(accuracy=dict(all=a), sha256=h) for t, a, h in
              (('t1', 0.5, 'abcdef0123'), ('t2', 0.75, '0123456789'))}
    assert tool.trunk_table(results, trunks).splitlines()[2:] == [
        '| trunk: patch accuracy | 0.500 | 0.750 |', '| trunk: sha256 | `abcdef01` | `01234567` |',
        '| head-only | 11.00 | 21.00 |', '| X | 13.50 | 24.50 |']


def test_finished_stages_as_tools_reproduce_skips_them(tmp_path):
    """A training is finished when its final checkpoint is there, to resume when only
    mmengine's last_checkpoint is, new otherwise; a test is finished when its metrics json is
    there; a JSON record is replaced whole or not at all."""
    from mmseg_prompt.utils.finished_stages import (finished_test, training_state,
                                                    write_json)
    train = tmp_path / 'train'
    assert training_state(str(train), 8) == (str(train / 'iter_8.pth'), False, False)
    train.mkdir()
    (train / 'iter_4.pth').write_bytes(b'')
    (train / 'last_checkpoint').write_text(str(train / 'iter_4.pth'))
    assert training_state(str(train), 8)[1:] == (False, True)
    (train / 'iter_8.pth').write_bytes(b'')
    assert training_state(str(train), 8)[1:] == (True, False)
    test = tmp_path / 'test_ss'
    assert finished_test(str(test)) is None
    (test / '20240101_000000').mkdir(parents=True)
    (test / '20240101_000000' / '20240101_000000.json').write_text('{"mIoU": 12.5}\n')
    assert finished_test(str(test)) == {'mIoU': 12.5}
    record = tmp_path / 'record.json'
    write_json(str(record), {'a': 1})
    with pytest.raises(TypeError):  # not serialisable: the earlier record stays
        write_json(str(record), {'a': object()})
    assert json.loads(record.read_text()) == {'a': 1} and os.listdir(tmp_path).count(
        'record.json') == 1 and not glob.glob(str(tmp_path / 'record.json.tmp*'))


def test_a_run_with_other_options_is_not_reused(tmp_path, capsys):
    """The run's key: the resolved config without the arm's label (a base value changes it), the
    --cfg-options, the trunk's sha256, kernel set, threads and data. Same key: the run dir is
    kept; another key, or none recorded (an earlier version's run): it is emptied."""
    tool = load_tool()
    arm = tool.discover_arms(COMPARISON)['vpt']
    cfg = Config.fromfile(arm.config)
    digest = tool.config_sha256(cfg)
    cfg.comparison_label = 'renamed'
    assert tool.config_sha256(cfg) == digest
    cfg.model.backbone.num_prompts = 11
    assert tool.config_sha256(cfg) != digest
    args = tool.parse_args(['--num-train', '8', '--num-val', '3'])
    info = dict(sha256='ab' * 32, requested_capability='avx2')
    overrides = {'randomness.seed': 0, **tool.schedule_overrides(8)}
    options = tool.run_options(args, arm, digest, overrides, info, {'OMP_NUM_THREADS': '1'})
    assert options['cfg_options']['train_cfg.max_iters'] == '8'
    run_dir = tmp_path / 'vpt' / 'avx2-s0' / 'seed0'
    tool.reuse_or_clear(str(run_dir), options)
    (run_dir / 'train.json').write_text('{}')
    tool.reuse_or_clear(str(run_dir), json.loads(json.dumps(options)))
    assert (run_dir / 'train.json').exists() and capsys.readouterr().out == ''
    others = [tool.run_options(args, arm, digest, dict(overrides, **tool.schedule_overrides(9)),
                               info, {'OMP_NUM_THREADS': '1'}),
              tool.run_options(args, arm, '0' * 64, overrides, info, {'OMP_NUM_THREADS': '1'}),
              tool.run_options(args, arm, digest, overrides, dict(info, sha256='cd' * 32),
                               {'OMP_NUM_THREADS': '1'}),
              tool.run_options(args, arm, digest, overrides, info, {})]
    for other, key in zip(others, ('cfg_options', 'config_sha256', 'trunk_sha256',
                                   'omp_num_threads')):
        tool.reuse_or_clear(str(run_dir), options)  # back to the first options, emptied
        capsys.readouterr()
        (run_dir / 'train.json').write_text('{}')
        tool.reuse_or_clear(str(run_dir), other)
        assert not (run_dir / 'train.json').exists()
        assert f'had other {key}: starting afresh' in capsys.readouterr().out
        assert json.loads((run_dir / 'options.json').read_text()) == other
    (run_dir / 'options.json').unlink()
    tool.reuse_or_clear(str(run_dir), options)
    assert 'has no options.json: starting afresh' in capsys.readouterr().out


def test_pinned_kernel_set_refuses_another_thread_count_and_sets_its_environment(capsys):
    """--cpu-capabilities pinned runs its own 2 threads: --threads 1 is refused, naming the fix,
    and --threads 2 (or none) passes; its runs get the pinned environment, the others only
    their ATEN_CPU_CAPABILITY."""
    tool = load_tool()
    with pytest.raises(SystemExit):
        tool.parse_args(['--cpu-capabilities', 'native,pinned', '--threads', '1'])
    assert 'runs 2 threads' in capsys.readouterr().err
    for threads in ([], ['--threads', '2']):
        assert tool.parse_args(['--cpu-capabilities', 'pinned'] + threads).cpu_capabilities == \
            ['pinned']
    assert tool.parse_args(['--cpu-capabilities', 'native', '--threads', '1']).threads == 1
    env = {'ATEN_CPU_CAPABILITY': 'avx512', 'OMP_NUM_THREADS': '1'}
    pinned = tool.capability_env(env, 'pinned')
    assert pinned['OMP_NUM_THREADS'] == '2'
    assert pinned.get('MKL_CBWR') == ('COMPATIBLE' if pins_apply() else None)
    assert tool.capability_env(env, 'avx2') == {'ATEN_CPU_CAPABILITY': 'avx2',
                                                'OMP_NUM_THREADS': '1'}
    assert tool.capability_env(env, 'native') == {'OMP_NUM_THREADS': '1'}


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


@pytest.mark.parametrize('arm', ['lora', 'adaptformer', 'bitfit'])
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


def predict(config, checkpoint, images, options):
    """mmseg's inference API on ``images``, as a user calls it: the segmentation logits
    (N, classes, H, W)."""
    from mmseg.apis import inference_model, init_model
    model = init_model(config, checkpoint, device='cpu', cfg_options=options)
    return torch.stack([inference_model(model, img).seg_logits.data for img in images])


def table_lines(stdout):
    """The summary and the rows of both tables, as the harness printed them."""
    return [line for line in stdout.splitlines()
            if line.startswith('|') or 'tiny ViTs pretrained on shapes' in line]


@pytest.mark.slow  # the harness runs tools/train.py and tools/test.py in subprocesses
def test_harness_end_to_end_and_again_reusing_its_finished_runs(tmp_path):
    """tools/compare_methods.py on a tiny setting (one trunk, of the pinned numerics; two arms; the
    tables' arithmetic over several trunks and seeds has its own test): the trunk's provenance,
    the tables (the paired gain by hand), the plot, an overlay, trainable parameters by hand,
    CVPT's predictions differ from head-only's at the same seed. The same command again reuses
    every finished run (no tool runs) and prints the same tables; with --tta added, only the
    --tta tests run. --min-margin passes and fails (--report-only) as asked."""
    work = tmp_path / 'work'
    cmd = [sys.executable, TOOL, '--arms', 'head_only,cvpt10', '--seeds', '0',
           '--trunk-seeds', '0', '--cpu-capabilities', 'pinned', '--iters', '8',
           '--pretrain-steps', '3', '--num-train', '8', '--num-val', '3', '--overlays', '1',
           '--cache-dir', str(tmp_path / 'cache'), '--work-dir', str(work)]
    first = subprocess.run(cmd + ['--no-tta'], cwd=REPO, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.count('pretraining the tiny trunk (3 steps') == 1
    assert first.stdout.count('$ python tools/train.py') == 2
    assert first.stdout.count('$ python tools/test.py') == 2 and 'reused' not in first.stdout
    assert '| head-only (linear probe) | 23,766 |' in first.stdout
    assert '| CVPT, 10 prompts | 27,606 |' in first.stdout
    out = json.loads((work / 'results.json').read_text())
    (trunk,) = out['trunks'].values()
    assert list(out['trunks']) == ['pinned-s0'] and trunk['cpu_capability'] == (
        'AVX2' if pins_apply() else cpu_capability())
    # pretrained, trained and tested under the pins: the trunk's record, and the options of
    # every run (mmengine's randomness.deterministic turns torch's deterministic algorithms on)
    assert trunk['numerics']['threads'] == 2 and trunk['numerics']['deterministic']
    if pins_apply():
        assert pins_held(trunk['numerics']) is None
    for arm in ('head_only', 'cvpt10'):
        options = json.loads((work / arm / 'pinned-s0' / 'seed0' / 'options.json').read_text())
        assert options['cfg_options']['randomness.deterministic'] == 'True'
        assert options['cpu_capability'] == 'pinned'
    assert trunk['sha256'] == file_sha256(trunk['path'])
    assert trunk['recipe']['steps'] == 3 and trunk['seed'] == 0
    assert 0 <= trunk['accuracy']['all'] <= 1
    assert out['arms']['head_only']['trainable_params'] == HEAD_PARAMS
    assert out['arms']['cvpt10']['trainable_params'] == HEAD_PARAMS + PROMPTS_10
    for arm in ('head_only', 'cvpt10'):
        (run,) = out['arms'][arm]['runs']
        assert (run['trunk'], run['seed']) == ('pinned-s0', 0) and 'miou_tta' not in run
        assert 0 <= run['miou_ss'] <= 100
        assert run['step_s'] > 0 and run['peak_rss_mib'] > 100
        assert 'decode.loss_ce' in run['losses']
        assert run['checkpoint'] == str(work / arm / 'pinned-s0' / 'seed0' / 'train' / 'iter_8.pth')
        assert len(glob.glob(str(work / arm / 'pinned-s0' / 'seed0' / 'pred' / '*.png'))) == 3
    gain = out['arms']['cvpt10']['runs'][0]['miou_ss'] - out['arms']['head_only']['runs'][0][
        'miou_ss']
    assert f'| {gain:.2f} ({gain:+.2f}) |' in first.stdout
    (overlay,) = glob.glob(str(work / 'overlays' / '*.png'))  # image, truth, 2 predictions
    assert cv2.imread(overlay).shape == (22 + 3 * 64, 4 * 3 * 64, 3)
    assert (work / 'miou_vs_params.png').stat().st_size > 1000
    # the table (header, rule, 2 arms) and the per-trunk one (header, rule, 2 trunk rows, 2 arms)
    markdown = (work / 'results.md').read_text()
    assert markdown.count('\n|') == 4 + 6

    images = sorted(glob.glob(str(work / 'data' / 'hue_pairs' / 'ADEChallengeData2016' /
                                  'images' / 'validation' / '*.jpg')))
    preds = {arm: predict(arm_config(arm), out['arms'][arm]['runs'][0]['checkpoint'], images,
                          {'model.backbone.pretrained': trunk['path']}).argmax(1)
             for arm in ('head_only', 'cvpt10')}
    assert (preds['head_only'] != preds['cvpt10']).float().mean() > 0.01

    again = subprocess.run(cmd + ['--no-tta'], cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count('finished earlier, its results reused') == 2
    assert '$ python tools/train.py' not in again.stdout
    assert '$ python tools/test.py' not in again.stdout
    assert table_lines(again.stdout) == table_lines(first.stdout)
    assert (work / 'results.md').read_text() == markdown
    rerun = json.loads((work / 'results.json').read_text())
    assert rerun['arms'] == out['arms'] and rerun['trunks'] == out['trunks']

    tta = subprocess.run(cmd + ['--min-margin', '-100', '--margin-arms', 'cvpt10'], cwd=REPO,
                         capture_output=True, text=True)
    assert tta.returncode == 0, tta.stdout[-3000:] + tta.stderr[-3000:]
    assert '$ python tools/train.py' not in tta.stdout and 'reused' not in tta.stdout
    assert tta.stdout.count('trained earlier') == tta.stdout.count('tested earlier') == 2
    assert tta.stdout.count('$ python tools/test.py') == 2
    assert tta.stdout.count('--tta --work-dir') == 2
    assert f'CVPT, 10 prompts - head-only: {gain:+.2f} mIoU' in tta.stdout
    with_tta = json.loads((work / 'results.json').read_text())
    for arm in ('head_only', 'cvpt10'):
        (run,) = with_tta['arms'][arm]['runs']
        assert 0 <= run.pop('miou_tta') <= 100 and run == out['arms'][arm]['runs'][0]
    fail = subprocess.run([sys.executable, TOOL, '--report-only', '--work-dir', str(work),
                           '--margin-arms', 'cvpt10', '--no-plot', '--min-margin', '100'],
                          cwd=REPO, capture_output=True, text=True)
    assert fail.returncode == 1
    assert 'CVPT, 10 prompts did not beat head-only by 100.0 mIoU points' in fail.stderr
    assert '| mIoU multi-scale + flip |' in fail.stdout


@pytest.mark.slow  # two tools/train.py runs in fresh interpreters
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
    images = sorted(glob.glob(osp.join(root, 'images', 'validation', '*.jpg')))
    logits = [predict(config, checkpoints[name], images,
                      {k: v for k, v in options.items() if k.startswith('model.backbone.')})
              for name, (config, options) in runs.items()]
    assert torch.equal(*logits), float((logits[0] - logits[1]).abs().max())
