"""Tests of garrison.shield."""
