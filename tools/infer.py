"""Segment images with a trained model: colour masks, overlays and label maps, in mmseg's style.

    python tools/infer.py IMAGES_OR_FOLDER [...] CONFIG CHECKPOINT --out-dir DIR
        [--opacity 0.5] [--device cpu|cuda:0] [--with-labels] [--cfg-options key=value ...]

For each image <stem> it writes, under DIR:
  masks/<stem>.png     the prediction in the dataset's palette
  overlays/<stem>.png  the mask over the image (mmseg's SegLocalVisualizer, --opacity)
  labels/<stem>.png    the class index of each pixel (0 = the dataset's first class)
The model is run as mmseg's `init_model` + `inference_model` run it (the config's test
pipeline and test_cfg, e.g. the sliding window), so the predictions are `tools/test.py`'s. The
checkpoint may hold the tuned weights only: the frozen trunk comes from
`model.backbone.pretrained`. Classes and palette: the checkpoint's `dataset_meta`, else the
config's test dataset's.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Segment images: colour masks, overlays and label maps (mmseg-prompt)')
    parser.add_argument('inputs', nargs='+', metavar='IMAGES_OR_FOLDER',
                        help='image files, or folders whose images are all segmented')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file (tuned weights only, or full)')
    parser.add_argument('--out-dir', required=True, help='where masks/, overlays/ and labels/ go')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='opacity of the mask in the overlays, in (0, 1] (default 0.5)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda or cuda:N (default: cuda:0 if available, else cpu)')
    parser.add_argument('--with-labels', action='store_true',
                        help='write the class names into the overlays')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, as key=value pairs')
    args = parser.parse_args(argv)
    if not 0 < args.opacity <= 1:
        parser.error(f'--opacity must be in (0, 1], got {args.opacity}')
    return args


def find_images(inputs):
    """(path, stem) of every image named or found directly inside a named folder, in order."""
    images = []
    for path in inputs:
        if osp.isdir(path):
            found = sorted(osp.join(path, f) for f in os.listdir(path)
                           if f.lower().endswith(IMG_EXTENSIONS)
                           and osp.isfile(osp.join(path, f)))
            if not found:
                raise FileNotFoundError(
                    f'no images found in folder {path} (looked for {", ".join(IMG_EXTENSIONS)}; '
                    f'sub-folders are not searched)')
            images += found
        elif osp.isfile(path):
            images.append(path)
        else:
            raise FileNotFoundError(f'image or folder {path} does not exist')
    stems = {}
    for path in images:
        stem = osp.splitext(osp.basename(path))[0]
        if stem in stems:
            raise ValueError(f'{stems[stem]} and {path} would write the same output files '
                             f'({stem}.png): segment them into different --out-dir')
        stems[stem] = path
    return [(path, stem) for stem, path in stems.items()]


def pick_device(device):
    import torch
    if device is None:
        return 'cuda:0' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f'--device {device}, but torch sees no CUDA device: use --device cpu')
    return device


def dataset_meta(cfg, checkpoint):
    """classes and palette: the checkpoint's dataset_meta, else the config's test dataset's."""
    meta = (checkpoint.get('meta') or {}).get('dataset_meta') or {}
    if meta.get('classes') and meta.get('palette'):
        return dict(classes=meta['classes'], palette=meta['palette'])
    from mmseg.registry import DATASETS
    ds = cfg.test_dataloader.dataset
    while 'dataset' in ds:  # dataset wrappers
        ds = ds.dataset
    cls = DATASETS.get(ds.type) if isinstance(ds.type, str) else ds.type
    info = {**getattr(cls, 'METAINFO', {}), **(ds.get('metainfo') or {})}
    if not info.get('classes') or not info.get('palette'):
        raise ValueError(f'no classes and palette in the checkpoint\'s meta nor in '
                         f'test_dataloader.dataset ({ds.type}): give the dataset '
                         f'metainfo=dict(classes=..., palette=...)')
    return dict(classes=info['classes'], palette=info['palette'])


def main(argv=None):
    args = parse_args(argv)
    for what, path in (('config', args.config), ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} file {path} does not exist')
    images = find_images(args.inputs)
    device = pick_device(args.device)

    import mmcv
    import numpy as np
    from mmengine.runner import load_checkpoint
    from mmengine.utils import ProgressBar, mkdir_or_exist
    from mmseg.apis import inference_model, init_model
    from mmseg.visualization import SegLocalVisualizer

    import mmseg_prompt  # noqa: F401  (the config's custom_imports does the same)
    from mmseg_prompt.utils.checkpoint_files import check_checkpoint_file
    check_checkpoint_file(args.checkpoint, fix='Copy it again from where it was saved.')
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    model = init_model(cfg, None, device=device)
    checkpoint = load_checkpoint(model, args.checkpoint, map_location='cpu')
    meta = dataset_meta(cfg, checkpoint)
    model.dataset_meta = meta
    num_classes = model.decode_head.num_classes
    if len(meta['palette']) < num_classes:
        raise ValueError(f'the model predicts {num_classes} classes (model.decode_head.'
                         f'num_classes) but the palette has {len(meta["palette"])} colours')
    palette = np.asarray(meta['palette'], dtype=np.uint8)
    visualizer = SegLocalVisualizer(name='mmseg_prompt_infer', alpha=args.opacity)
    visualizer.set_dataset_meta(classes=meta['classes'], palette=meta['palette'])

    dirs = {k: osp.join(args.out_dir, k) for k in ('masks', 'overlays', 'labels')}
    for d in dirs.values():
        mkdir_or_exist(d)
    print(f'segmenting {len(images)} images on {device} into {args.out_dir}/'
          f'{{masks,overlays,labels}}/', flush=True)
    bar = ProgressBar(len(images))
    unreadable = []
    for path, stem in images:
        image = mmcv.imread(path, channel_order='bgr') if osp.getsize(path) else None
        if image is None:  # not an image a decoder reads (corrupt, truncated, empty)
            unreadable.append(path)
            bar.update()
            continue
        result = inference_model(model, image)
        pred = result.pred_sem_seg.data[0].cpu().numpy()
        mmcv.imwrite(pred.astype(np.uint8 if num_classes <= 256 else np.uint16),
                     osp.join(dirs['labels'], f'{stem}.png'))
        mmcv.imwrite(palette[pred][..., ::-1], osp.join(dirs['masks'], f'{stem}.png'))  # BGR
        visualizer.add_datasample(stem, image[..., ::-1], result,
                                  draw_gt=False, with_labels=args.with_labels,
                                  out_file=osp.join(dirs['overlays'], f'{stem}.png'))
        bar.update()
    done = len(images) - len(unreadable)
    print(f'\nwrote {done} masks, overlays and label maps to {args.out_dir}', flush=True)
    if unreadable:
        sys.exit(f'{len(unreadable)} of {len(images)} images could not be read, so they were not '
                 f'segmented:\n' + '\n'.join(f'  {p}' for p in unreadable))


if __name__ == '__main__':
    main()
