"""What the Numba and the C box kernels share (importing this does not import Numba)."""


def bit_length(n: int) -> int:
    """Bits of a key field holding values 0..n (at least one)."""
    return max(1, int(n).bit_length())
