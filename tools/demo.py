"""The built-in example that `make demo` runs: what prompt tuning adds, in miniature, on a CPU.

The short version of the prompt comparison (tools/compare_methods.py, docs/comparison.md):

1. pretrains a tiny timm ViT on synthetic shape segmentation (pretraining seed ``--trunk-seed``,
   default 0, with the CPU kernels of the machine it runs on or those of ``--cpu-capability``;
   cached: later runs reuse it);
2. writes the shifted downstream task (hue pairs) in ADE20K's folder layout;
3. trains head-only (linear probing), VPT-Deep and CVPT on it with `tools/train.py`, training
   seeds 0 and 1, the full comparison's schedule, and tests each with `tools/test.py`,
   single-scale and `--tta`;
4. prints the table, saves prediction overlays, and fails unless VPT-Deep beats head-only by
   ``MIN_MARGIN`` mIoU points (single-scale, the mean of the two seeds' paired gains). CVPT is
   reported, not checked: across trunks its gain over head-only is not steady
   (docs/comparison.md, "The demo's margin").

Usage: python tools/demo.py [--work-dir demo_out] [--threads N] [--trunk-seed S]
       [--cpu-capability native|avx2|...]
"""
import argparse
import os
import os.path as osp
import subprocess
import sys
from typing import Optional, Sequence

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# mIoU points VPT-Deep must beat head-only by, as the mean of two seeds' paired gains
# (docs/comparison.md, "The demo's margin"): twice the seed noise of that mean, measured over
# 6 trunks x 2 seeds: 2 x sqrt(1.48^2 + 1.04^2) / sqrt(2) = 2.56, rounded up. A prompt path that
# does nothing passes it about 2% of the time; the six trunks' mean gains were 3.1-7.5.
MIN_MARGIN = 2.6
NATIVE = 'native'


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--work-dir', default=osp.join(REPO, 'demo_out'))
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--trunk-seed', type=int, default=0, help='pretraining seed of the trunk')
    p.add_argument('--cpu-capability', default=os.environ.get('ATEN_CPU_CAPABILITY', NATIVE),
                   help='CPU kernel set to pretrain and run with: native (torch\'s choice) or an '
                        'ATEN_CPU_CAPABILITY value (default: that variable if set, else native)')
    args = p.parse_args(argv)
    options = ['--arms', 'head_only,vpt,cvpt10', '--seeds', '0,1',
               '--trunk-seeds', str(args.trunk_seed), '--cpu-capabilities', args.cpu_capability,
               '--work-dir', args.work_dir, '--overlays', '3', '--min-margin', str(MIN_MARGIN),
               '--margin-arms', 'vpt', '--no-plot']
    if args.threads:
        options += ['--threads', str(args.threads)]
    cmd = [sys.executable, osp.join(REPO, 'tools', 'compare_methods.py')] + options
    print('$ python tools/compare_methods.py ' + ' '.join(options), flush=True)
    return subprocess.call(cmd, cwd=REPO)


if __name__ == '__main__':
    sys.exit(main())
