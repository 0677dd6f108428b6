"""What makes models: reward-model training (backbone and fused head) and pretraining of the
built-in LMs."""
