"""Metrics: bouncing-ball coherence from frames alone, held to real data (``coherence``, on ``tracking`` and
``distances``; ``cases`` makes sequences wrong in known ways to test it) and fidelity to ground truth (``fidelity``:
PSNR, SSIM and the bicubic baseline)."""
