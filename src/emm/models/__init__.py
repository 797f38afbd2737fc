"""Model library: single-task MLPs, decomposition (Algorithm 1), AKF and EMM (Algorithm 2), training."""
