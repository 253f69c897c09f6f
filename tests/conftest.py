"""Shared fixtures. Tests run on the CPU with the checkpoint shipped inside the package."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def pipeline():
    from garrison.video.pipelines.builtin import BuiltinPipeline

    return BuiltinPipeline.load()


@pytest.fixture(scope="session")
def text_encoder():
    from garrison.video.models.text_encoder import shared_text_encoder

    return shared_text_encoder()
