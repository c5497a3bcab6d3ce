"""The network and what it is trained with, pure JAX: U-Net, convolutions, masking, losses."""
