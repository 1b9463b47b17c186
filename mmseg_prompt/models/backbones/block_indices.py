"""Block indices as configs give them (``out_indices``, ``guided_blocks``, a part's ``blocks``)."""
from typing import List, Sequence, Tuple, Union


def normalise_indices(indices: Union[int, Sequence[int]], depth: int,
                      key: str = 'out_indices') -> Tuple[int, ...]:
    """Block indices (negative: from the end) as a tuple of 0..depth-1, each at most once;
    ``key`` names the config key in the error."""
    if isinstance(indices, int):
        indices = [indices]
    out: List[int] = []
    for i in indices:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ValueError(f'{key} has {i}, but the trunk has {depth} blocks '
                             f'(valid: 0..{depth - 1} or negative from the end)')
        if j in out:
            raise ValueError(f'{key} has block {j} twice ({tuple(indices)}); each block '
                             f'appears once')
        out.append(j)
    return tuple(out)
