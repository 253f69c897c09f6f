"""Samplers exposing set_timesteps() and step()."""
