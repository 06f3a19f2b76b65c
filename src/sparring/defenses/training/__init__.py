"""Robust training: noise augmentation, certified (IBP/CROWN-IBP) training."""
