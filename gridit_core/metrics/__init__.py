"""Metrics: bouncing-ball coherence from frames alone (``coherence``) and fidelity to ground truth (``fidelity``:
PSNR, SSIM and the bicubic baseline)."""
