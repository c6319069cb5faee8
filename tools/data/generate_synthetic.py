"""Generate the seeded synthetic datasets of the demos (no downloads).

    python tools/data/generate_synthetic.py detection --out data/synthetic_shapes
    python tools/data/generate_synthetic.py video --out data/synthetic_clips
    python tools/data/generate_synthetic.py detection --out /tmp/tiny --num-train 8 --num-val 4

The same arguments give byte-identical files; a dataset already made with the same arguments
(its ``manifest.json`` matches) is reused, not written again (``--overwrite`` forces it).
"""
import argparse
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

#: kind -> (default output folder, default train / val sizes)
KINDS = {'detection': ('data/synthetic_shapes', 1000, 200),
         'video': ('data/synthetic_clips', 1200, 120)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('kind', choices=sorted(KINDS))
    parser.add_argument('--out', help='dataset root (default: data/synthetic_shapes for '
                        'detection, data/synthetic_clips for video)')
    parser.add_argument('--num-train', type=int, help='training images / clips')
    parser.add_argument('--num-val', type=int, help='validation images / clips')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true', help='regenerate even if it exists')
    args = parser.parse_args(argv)
    from mmdaq.datasets import generate_detection_dataset, generate_video_dataset
    out, num_train, num_val = KINDS[args.kind]
    generate = generate_detection_dataset if args.kind == 'detection' else generate_video_dataset
    t0 = time.time()
    info = generate(args.out or out,
                    num_train=num_train if args.num_train is None else args.num_train,
                    num_val=num_val if args.num_val is None else args.num_val,
                    seed=args.seed, overwrite=args.overwrite)
    status = 'generated' if info['generated'] else 'reused (same arguments)'
    print(f'[data] {args.kind}: {info["data_root"]} {status} in {time.time() - t0:.1f} s')
    return info


if __name__ == '__main__':
    main()
