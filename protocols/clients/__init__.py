"""Local training of clients: vectorized (``torch.func.vmap``) or looped SGD, and adversarial
regularization (Nasr et al. 2018). Imports no other fedaudit package (torch only)."""
from protocols.clients.advreg import AdvRegParty, InferenceModel, check_lambda, train_clients_advreg
from protocols.clients.local import (TRAINERS, BatchTransform, LocalTraining, batch_schedule, client_group_size,
                                     evaluate, free_memory_bytes, train_loop, train_vmap)

__all__ = ["TRAINERS", "BatchTransform", "LocalTraining", "batch_schedule", "client_group_size", "evaluate",
           "free_memory_bytes", "train_loop", "train_vmap",
           "AdvRegParty", "InferenceModel", "check_lambda", "train_clients_advreg"]
