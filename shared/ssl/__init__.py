"""Pre-training methods (masked autoencoder, ...): each wraps a network and returns its loss."""

from shared.ssl.mae import MaskedAutoencoder, masked_mse_loss
from shared.ssl.masking import block_mask

__all__ = ["MaskedAutoencoder", "block_mask", "masked_mse_loss"]
