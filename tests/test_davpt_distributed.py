"""Two CPU processes (gloo): class statistics are all-reduced and both ranks end with the same
class-to-prompt mapping, equal to one process holding all the statistics."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.slow  # two gloo processes: about 30 s on 2 CPU cores


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def rank_stats(rank, D=64):
    """Different classes on each rank; class 2 on both."""
    g = torch.Generator().manual_seed(100 + rank)
    sums, counts = torch.zeros(6, D), torch.zeros(6)
    for c in ([0, 1, 2] if rank == 0 else [2, 3, 4]):
        n = 1 + rank + c
        sums[c] = torch.randn(D, generator=g) * n
        counts[c] = n
    return sums, counts


def worker(rank, port, out_dir):
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=2)
    from test_davpt import guided_segmentor
    model = guided_segmentor(num_classes=6)
    sums, counts = rank_stats(rank)
    model.class_sums.copy_(sums)
    model.class_counts.copy_(counts)
    model.recluster()
    torch.save(dict(mapping=model.class_to_prompt, centroids=model.centroids),
               f'{out_dir}/rank{rank}.pth')
    # both ranks done before either tears gloo down: a rank that exits while the other still
    # holds the connection can abort ("terminate called without an active exception")
    dist.barrier()
    dist.destroy_process_group()


def test_two_ranks_end_with_the_same_mapping(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / 'rank0.pth')
    r1 = torch.load(tmp_path / 'rank1.pth')
    assert torch.equal(r0['mapping'], r1['mapping'])
    assert torch.equal(r0['centroids'], r1['centroids'])
    # one process with the summed statistics gives the same mapping: the sums were all-reduced
    from test_davpt import guided_segmentor
    model = guided_segmentor(num_classes=6)
    (s0, c0), (s1, c1) = rank_stats(0), rank_stats(1)
    model.class_sums.copy_(s0 + s1)
    model.class_counts.copy_(c0 + c1)
    model.recluster()
    assert torch.equal(model.class_to_prompt, r0['mapping'])
    torch.testing.assert_close(model.centroids, r0['centroids'])
    assert (r0['mapping'] >= 0).all()  # class 5, seen on no rank, is mapped too
