"""Placeholder until the RIM module lands."""

from torch import nn


class RIMCell(nn.Module):
    pass


class RIM(nn.Module):
    pass
