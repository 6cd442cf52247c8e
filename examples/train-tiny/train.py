"""A tiny classifier for the ``train`` runtime: three Gaussian blobs in 8 dimensions.

The data is generated from the job's seed (no download), so every worker trains on the same
examples. The runtime seeds torch, picks the batches and checkpoints; this file only says what
the data, the model and one step are.
"""

import torch
from torch import nn

CLASSES, FEATURES, PER_CLASS = 3, 8, 200


def dataset(ctx):
    generator = torch.Generator().manual_seed(ctx.seed)
    centres = torch.randn(CLASSES, FEATURES, generator=generator) * 3
    noise = torch.randn(CLASSES * PER_CLASS, FEATURES, generator=generator)
    labels = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    return centres[labels] + noise, labels


def init(ctx):
    hidden = int(ctx.params.get("hidden", "32"))
    model = nn.Sequential(
        nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, CLASSES)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=float(ctx.params.get("lr", "0.01")))
    return model, optimizer


def step(ctx, model, optimizer, batch):
    inputs, targets = batch
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()
