"""Draw a config's training samples, after its train pipeline, with their labels.

    python tools/analysis/browse_dataset.py CONFIG [--output-dir DIR] [--not-show]
        [--show-interval S] [--cfg-options key=value ...]

mmseg's ``tools/analysis_tools/browse_dataset.py`` with the same flags and output. mmseg 1.2.2's
own stops with ``cv2.error ... rectangle ... Layout of the output array img is incompatible``
under every opencv 4.x (mmsegmentation issue 3405): it hands the visualizer a non-contiguous view
of the image, and ``cv2.rectangle`` cannot draw into the label layer made like it. This one
passes a contiguous copy.
"""
import argparse
import os.path as osp

from mmengine.config import Config, DictAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Browse a dataset (mmseg-prompt)')
    p.add_argument('config', help='train config file path')
    p.add_argument('--output-dir', help='save the drawn samples here (for machines without a '
                   'display)')
    p.add_argument('--not-show', action='store_true', help='do not open a window')
    p.add_argument('--show-interval', type=float, default=2, help='seconds per shown sample')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of the config, as key=value pairs')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import numpy as np
    from mmengine.registry import init_default_scope
    from mmengine.utils import ProgressBar
    from mmseg.registry import DATASETS, VISUALIZERS

    import mmseg_prompt  # noqa: F401  (the config's custom_imports does the same)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo
    progress = ProgressBar(len(dataset))
    for item in dataset:
        # CHW BGR tensor -> contiguous HWC RGB array (mmseg's tool passes a strided view)
        image = np.ascontiguousarray(item['inputs'].permute(1, 2, 0).numpy()[..., ::-1])
        sample = item['data_samples'].numpy()
        name = osp.basename(sample.img_path)
        visualizer.add_datasample(
            name=name, image=image, data_sample=sample, draw_gt=True, draw_pred=False,
            wait_time=args.show_interval, show=not args.not_show,
            out_file=None if args.output_dir is None else osp.join(args.output_dir, name))
        progress.update()


if __name__ == '__main__':
    main()
