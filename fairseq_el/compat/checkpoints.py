"""Load fairseq checkpoints under torch's ``weights_only`` unpickler (torch >= 2.6).

torch >= 2.6 refuses any class it does not know, and fairseq checkpoints carry their training
configuration as ``argparse.Namespace`` (fairseq < 0.10 and legacy models) or as omegaconf
containers (fairseq 0.10 - 0.11). We allow-list exactly those classes, on import of ``fairseq_el``;
the check stays on, so a checkpoint holding anything else still fails, naming the class.
"""

import argparse
import collections
import typing
from typing import List

import torch
from omegaconf import DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode


def fairseq_checkpoint_globals() -> List[object]:
    """The classes fairseq writes into checkpoints besides tensors and plain containers."""
    return [
        argparse.Namespace,
        collections.defaultdict,
        DictConfig,
        ListConfig,
        ContainerMetadata,
        Metadata,
        AnyNode,
        BooleanNode,
        FloatNode,
        IntegerNode,
        StringNode,
        typing.Any,
        # omegaconf records the types of its keys and values (``ref_type``, ``object_type``)
        dict,
        list,
        int,
    ]


def apply() -> bool:
    """Allow-list fairseq's checkpoint classes; returns whether this torch needed it."""
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is None:  # torch < 2.4 has no weights_only allow-list
        return False
    add_safe_globals(fairseq_checkpoint_globals())
    return True
